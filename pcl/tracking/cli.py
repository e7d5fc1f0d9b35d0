"""The command line of the tracking layer: `python -m pcl.tracking upload RESULTS_DIR` and `... ping`."""
from __future__ import annotations

import sys
from typing import Sequence

from pcl.flags import OneLineParser
from pcl.schema import ConfigError
from pcl.tracking.errors import StoreUnavailable, UserError
from pcl.tracking.grid import check_database_name
from pcl.secrets import MONGO_URL_ENV, redact, redact_url
from pcl.tracking.stores import DEFAULT_DB_NAME, open_store
from pcl.tracking.upload import upload


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m pcl.tracking", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload file-store records (e.g. of runs whose MongoDB went away)")
    up.add_argument("results_dir", help="the file store (results_dir of the runs)")
    ping = sub.add_parser("ping", help="check that MongoDB answers and accepts records")
    for p in (up, ping):
        p.add_argument("--mongo-url", default=None,
                       help=f"MongoDB URL (default: ${MONGO_URL_ENV}; prefer the variable: argv is visible to "
                            "other users)")
        p.add_argument("--db-name", default=None, help=f"database (default: the URL's, else {DEFAULT_DB_NAME!r})")
    up.add_argument("--include-running", action="store_true", help="also upload records still marked RUNNING")
    args = parser.parse_args(argv)
    try:
        # the drivers' check of `db_name` (and of the URL's database): pymongo would refuse one with a traceback
        check_database_name(args.mongo_url, args.db_name)
        if args.command == "upload":
            upload(args.results_dir, args.mongo_url, args.db_name, include_running=args.include_running)
        else:
            store = open_store(".", args.mongo_url, args.db_name)
            if not store.mongo_url:
                raise StoreUnavailable(f"no MongoDB URL given (--mongo-url or {MONGO_URL_ENV})")
            print(f"MongoDB {redact_url(store.mongo_url)} (database {store.db_name!r}) answers and accepts records")
    except (UserError, ConfigError) as err:
        print(f"error: {redact(err)}", file=sys.stderr)
        return 2
    return 0


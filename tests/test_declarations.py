"""Declarations of methods and backbones (pcl.declarations) and the registry built from them (pcl.registry): read
without running a file, checked, and the only place the rest of the suite learns names, options, heads and costs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pcl import registry
from pcl.declarations import DeclarationError, Head, MethodSpec, Option, read_declaration

ROOT = Path(__file__).resolve().parents[1]


def test_a_declaration_is_read_without_running_its_file(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import no_such_module_at_all\nraise SystemExit('ran')\n"
                    "DECLARATION = MethodSpec(name='x', display='X', citation='c', trains='t', deploys='d',\n"
                    "    heads=(Head('net', 'network'),), deployed='net', options=(Option('k', 2, 'doc'),))\n")
    spec = read_declaration(path, "DECLARATION")
    assert spec.name == "x" and spec.defaults == {"k": 2} and spec.option("k").kind == "int"


@pytest.mark.parametrize("expression", [
    "__import__('os').system('true')",
    "MethodSpec(name=open('/etc/hostname').read())",
    "[x for x in ()]",
    "MethodSpec.__init__",
    "lambda: 1",
    "SOME_CONSTANT",
])
def test_a_declaration_holds_only_constructors_and_literals(tmp_path, expression):
    path = tmp_path / "m.py"
    path.write_text(f"DECLARATION = {expression}\n")
    with pytest.raises(DeclarationError, match=r"m\.py:1: DECLARATION may hold only"):
        read_declaration(path, "DECLARATION")


def test_a_missing_declaration_is_named(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("x = 1\n")
    with pytest.raises(DeclarationError, match="m.py: no top-level DECLARATION"):
        read_declaration(path, "DECLARATION")


def test_the_registry_imports_no_torch():
    code = ("import sys; from pcl import registry, schema; registry.methods(); registry.backbones(); "
            "schema.normalize_run_config({'method': 'pcl', 'backbone': 'wrn20_8'}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_every_method_file_declares_and_every_paper_table_has_a_grid():
    files = {p.stem for p in (ROOT / "pcl" / "methods").glob("*.py") if "\nDECLARATION = " in p.read_text()}
    assert {registry.method_module(m).rsplit(".", 1)[1] for m in registry.methods()} == files
    for spec in registry.methods().values():
        assert spec.in_paper or not spec.tables  # a method outside the paper is in no default grid
    assert registry.table_methods("table2") and registry.table_backbones("table2")


def test_temporal_mean_heads_name_their_live_head():
    spec = MethodSpec(name="x", display="X", citation="c", trains="t", deploys="d", deployed="ema_student",
                      heads=(Head("student", "network"), Head("ema_student", "temporal_mean", mean_of="student"),
                             Head("peer{j}", "peer"), Head("avg{j}", "temporal_mean", mean_of="peer{j}")))
    assert spec.trained_head_of("ema_student") == "student"
    assert spec.trained_head_of("avg12") == "peer12" and spec.trained_head_of("peer3") == "peer3"
    assert spec.head("avg012") is None and spec.trained_head_of("nothing") == "nothing"
    with pytest.raises(ValueError, match="temporal_mean head names the head it averages"):
        Head("mean", "temporal_mean")


def test_the_epoch_line_takes_the_declared_live_head_of_a_deployed_temporal_mean():
    from pcl.engine import epoch_line

    history = [{"epoch": 1, "lr": 0.1, "train/loss/total": 2.0, "train/top1_err/student": 40.0,
                "test/top1_err/ema_student": 50.0}]
    line = epoch_line(history, 2, "ema_student", 1.0, 1.0, trained_head="student")
    assert "train err 40.00% (student)" in line and "test err 50.00% (ema_student)" in line


def test_option_checks_say_what_is_allowed():
    temperature = Option("temperature", 3.0, "T", minimum=0, exclusive_minimum=True)
    assert temperature.check(4) == 4.0 and isinstance(temperature.check(4), float)
    for bad in (0, -1, True, "3", float("nan"), None):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            temperature.check(bad)
    choice = Option("form", "a", "f", choices=("a", "b"))
    with pytest.raises(ValueError, match="must be one of a, b"):
        choice.check("c")
    assert Option("wd", None, "w", kind="float", minimum=0).check(None) is None


@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                 st.lists(st.integers(), max_size=2)))
def test_an_option_check_accepts_or_says_why(value):
    """Any JSON-like value: a declared option returns a value of its kind, or ValueError with what is allowed."""
    for option in (Option("n", 3, "n", minimum=2), Option("f", 0.5, "f", minimum=0, maximum=1),
                   Option("b", True, "b"), Option("s", "x", "s", choices=("x", "y")), Option("a", None, "a")):
        try:
            out = option.check(value)
        except ValueError as err:
            assert str(err).startswith("must be ")
            continue
        if option.kind == "int":
            assert type(out) is int and out >= 2
        elif option.kind == "float":
            assert type(out) is float and 0 <= out <= 1
        elif option.kind == "bool":
            assert type(out) is bool
        elif option.choices:
            assert out in option.choices


def test_unknown_names_fail_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'nope'; known methods: .*pcl"):
        registry.method("nope")
    with pytest.raises(ValueError, match="unknown backbone 'nope'; known backbones: .*resnet32"):
        registry.backbone("nope")
    assert registry.method_display("nope") == "nope" and registry.backbone_display(["x"]) == "['x']"


METHOD = ("DECLARATION = MethodSpec(\n"
          "    name='x', display='X', citation='c', trains='t', deploys='d',\n"
          "    heads=(Head('peer{j}', 'peer'), Head('mean{j}', 'temporal_mean', mean_of='peer{j}')),\n"
          "    deployed='mean1', views='peers', tables=('table2',),\n"
          "    options=(Option('peers', 3, 'm', minimum=1),\n"
          "             Option('temperature', 3.0, 'T', minimum=0, exclusive_minimum=True)))\n")


@pytest.mark.parametrize("old, new, message", [
    # a field that does not exist: the fields are listed (it was a TypeError traceback without them)
    ("tables=", "tabels=", r"m\.py:4: DECLARATION: MethodSpec has no field 'tabels' \(its fields: name, "
                           r".*\); did you mean 'tables'\?$"),
    # a bound on an option whose default is no number: said of the default (it blamed the bound)
    ("Option('temperature', 3.0,", "Option('temperature', '3.0',", r"option 'temperature': minimum=0 bounds a number, "
                                                                   r"but the option is str \(its default '3\.0'\)"),
    # a default its own check refuses: every run leaving it unset would be refused
    ("3.0, 'T'", "0.0, 'T'", r"m\.py:6: DECLARATION: Option: option 'temperature': its default 0\.0 must be a "
                             r"finite number > 0"),
    # names that point nowhere: the deployed head, a temporal mean's live head, the views' option, a grid table
    ("deployed='mean1'", "deployed='mean_peer1'", r"m\.py:1: .*deployed='mean_peer1' is none of its heads"),
    ("mean_of='peer{j}'", "mean_of='peers{j}'", r"head 'mean\{j\}': mean_of='peers\{j\}' must be another "
                                                r"per-peer head \(\{j\} in its name\) of peer\{j\}, mean\{j\}"),
    ("views='peers'", "views='peer'", r"views='peer' must be a number >= 1 or the name of one of its integer "
                                      r"options whose every value is >= 1 \(n, k, peers\)"),
    ("tables=('table2',)", "tables=('table_2',)", r"tables=\('table_2',\) must be a tuple of some of table2, "),
    ("Head('peer{j}', 'peer'), ", "Head('peer{j}', 'peer'), Head('peer{j}', 'peer'), ", "declares a head twice"),
    # a value no arithmetic of numbers gives
    ("minimum=1)", "minimum=1 / 0)", r"m\.py:5: DECLARATION: division by zero"),
    ("minimum=1)", "minimum='a' * 3)", "arithmetic is for numbers only"),
    ("minimum=1)", "minimum=2 ** 3)", r"m\.py:5: DECLARATION may hold only .* \(found the operator Pow\)"),
    # review: what passed the declaration and broke elsewhere, or escaped as another exception
    ("tables=('table2',),", "tables=('table2',), order=6, order=7,", r"m\.py:4: .*the field 'order' is given twice"),
    ("tables=('table2',),", "tables=('table2',), order='6',", r"order='6' must be an integer"),
    ("tables=('table2',),", "tables=('table2',), relative_cost=1e999,", r"relative_cost=inf must be a finite number"),
    ("tables=('table2',),", "tables=('table2',), relative_cost=True,", r"relative_cost=True must be a finite number"),
    ("display='X',", "display=None,", r"display=None must be a string"),
    ("tables=('table2',),", "tables=('table2',), notes={(1, [2]): 1},", r"a dict key is a string or a number"),
    ("minimum=1)", "minimum=1" + "0" * 400 + ")", r"m\.py:5: DECLARATION: Option: int too large"),
    ("minimum=1)", "minimum=float)", r"found Name 'float'"),
    ("deployed='mean1'", "deployed='mean{j}'", r"deployed='mean\{j\}' is none of its heads"),
    ("deployed='mean1'", "deployed='mean4'", r"deployed='mean4' is missing from a run of 1 peer\(s\)"),
    ("options=(", "options=(Option('form', 'x', 'f', time_constant='epochs'), ", "a time_constant is a number"),
    ("Option('temperature',", "Option('dropout',", r"option 'dropout': every method is given backbone, "
                                                   r"num_classes, dropout by the run"),
    ("Option('temperature',", "Option('a b',", r"an option: name 'a b' must be a Python identifier"),
    ("'T', minimum=0,", "'T', choices='abc', minimum=0,", r"choices='abc' must be a tuple"),
    ("'T', minimum=0,", "'T', minimum=1e999 - 1e999,", r"minimum=nan must be a finite number"),
    ("Head('peer{j}', 'peer')", "Head('p{j}{j}', 'peer')", r"a head's name is an identifier .* at most one \{j\}"),
    ("mean_of='peer{j}'", "mean_of='mean{j}'", r"mean_of='mean\{j\}' must be a trained head"),
    ("Head('mean{j}', 'temporal_mean', mean_of='peer{j}')", "Head('mean{j}', 'peer'), Head('ema', 'temporal_mean', "
     "mean_of='peer{j}')", r"head 'ema': mean_of='peer\{j\}' is none of its heads"),
    ("Option('peers', 3, 'm', minimum=1)", "Option('peers', 3, 'm', minimum=1, allow_none=True)",
     r"views='peers' must be a number >= 1 or the name of one of its integer options whose every value is >= 1"),
    # views: an option every value of which is >= 1 by its choices or an exclusive 0 (review: refused before)
    ("views='peers'", "views='n'", None),
    ("views='peers'", "views='k'", None),
    ("name='x'", "name='None'", r"a method: name 'None' must be a Python identifier"),
])
def test_a_declaration_mistake_names_its_file_line_and_what_is_allowed(tmp_path, old, new, message):
    """Each mistake is one DeclarationError naming the file and the line of the call at fault; before, a field's
    typo was a TypeError traceback into dataclasses, and a deployed head, averaged head, views option or table
    that names nothing was accepted (found when a run evaluated its heads, or never: no grid held the method)."""
    path = tmp_path / "m.py"
    path.write_text(METHOD)
    assert read_declaration(path, "DECLARATION").deployed == "mean1"
    assert old in METHOD
    path.write_text(METHOD.replace(old, new, 1).replace("options=(", "options=(Option('n', 2, 'views', choices=(1, 2)), "
                                                       "Option('k', 2, 'k', minimum=0, exclusive_minimum=True), "))
    if message is None:
        assert read_declaration(path, "DECLARATION").views == new[len("views='"):-1]
        return
    with pytest.raises(DeclarationError, match=message):
        read_declaration(path, "DECLARATION")


def test_a_declaration_that_does_not_parse_names_its_line(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(METHOD.replace("citation='c',", "citation='c'"))  # a missing comma
    with pytest.raises(DeclarationError, match=r"m\.py:2: "):
        read_declaration(path, "DECLARATION")


BACKBONE = ("DECLARATIONS = (BackboneSpec(name='tiny', display='Tiny', builder='tiny', citation='c',\n"
            "    datasets=('cifar100',), params={100: 1000}, split='layer1', init='default'),)\n"
            "def tiny(num_classes):\n    return None\n")


@pytest.mark.parametrize("text, message", [
    ("# -*- coding: latin-1 -*-\n# caf\xe9\n" + METHOD, None),  # Python's own reading of a file: it imports
    ("\ufeff" + METHOD, None),
    ("x = (\n" + METHOD, r"m\.py:1: "),  # a syntax error anywhere, with its line
    ("\0" + METHOD, r"m\.py:1?: "),
    (METHOD + METHOD.replace("name='x'", "name='y'"), r"m\.py:7: DECLARATION is assigned again \(first at line 1\)"),
    (METHOD.replace("minimum=1)", "minimum=" + "-" * 5000 + "1)"), r"m\.py:"),  # nested too deeply
])
def test_a_declaring_file_is_read_as_python_reads_it_or_named(tmp_path, text, message):
    """Its encoding as Python decodes it (a coding line, a BOM: a latin-1 file that imports was a UnicodeDecodeError),
    and every other failure a DeclarationError naming the file (a RecursionError, a second assignment that an import
    would bind instead of the checked one)."""
    path = tmp_path / "m.py"
    path.write_bytes(text.encode("latin-1" if "latin-1" in text else "utf-8"))
    if message is None:
        assert read_declaration(path, "DECLARATION").name == "x"
        return
    with pytest.raises(DeclarationError, match=message):
        read_declaration(path, "DECLARATION")


def test_a_file_name_with_braces_is_named_as_it_is(tmp_path):
    path = tmp_path / "m{x}.py"
    path.write_text(METHOD.replace("tables=", "tabels="))
    with pytest.raises(DeclarationError, match=r"^m\{x\}\.py:4: DECLARATION: MethodSpec has no field 'tabels'"):
        read_declaration(path, "DECLARATION")


@pytest.mark.parametrize("old, new, message", [
    ("datasets=('cifar100',)", "datasets=('cifar-100',)", r"m\.py:1: .*datasets=\('cifar-100',\) must be a tuple "
                                                          r"of some of cifar10, cifar100, imagenet, synthetic"),
    ("params={100: 1000}", "params={100: 1000.5}", "params must map a number of classes to the parameter count"),
    ("init='default')", "init='default', dropout=1.5)", r"dropout=1\.5 must be a number in \[0, 1\) or None"),
    ("init='default')", "init='default', revision=0)", "revision=0 must be an integer >= 1"),
    ("init='default')", "init='default', tables=('imagenet',))", r"tables has imagenet, whose grid runs on imagenet, "
                                                                 r"which datasets=\('cifar100',\) does not have"),
])
def test_a_backbone_declaration_mistake_is_named(tmp_path, old, new, message):
    path = tmp_path / "m.py"
    path.write_text(BACKBONE.replace(old, new, 1))
    with pytest.raises(DeclarationError, match=message):
        read_declaration(path, "DECLARATIONS")


def test_a_backbone_builder_is_a_function_of_its_own_file(tmp_path, monkeypatch):
    """The registry reads the builder's name only when a network is built (torch side): a name of no function of
    the file was found there, in the middle of a run; it is refused with the declaration."""
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / "tiny.py"
    path.write_text(BACKBONE)
    monkeypatch.setattr(registry, "PACKAGE", tmp_path)
    specs, modules = registry._collect("models", "DECLARATIONS", registry.BackboneSpec, many=True)
    assert list(specs) == ["tiny"] and modules["tiny"] == "pcl.models.tiny"
    for text in (BACKBONE.replace("def tiny(", "def tiny_net("),
                 BACKBONE.replace("def tiny(", '"""\ndef tiny(x): named in a string only"""\ndef tiny_net(')):
        path.write_text(text)
        with pytest.raises(DeclarationError, match=r"tiny\.py: backbone 'tiny': builder='tiny' is no top-level "
                                                   r"function of the file"):
            registry._collect("models", "DECLARATIONS", registry.BackboneSpec, many=True)
    for found in (BACKBONE.replace("def tiny(", "def tiny ("),  # valid Python, and a builder imported from elsewhere
                  BACKBONE.replace("def tiny(", "from os.path import join as tiny\ndef unused(")):
        path.write_text(found)
        assert list(registry._collect("models", "DECLARATIONS", registry.BackboneSpec, many=True)[0]) == ["tiny"]


@pytest.mark.parametrize("form", ["DECLARATIONS: tuple = (", "DECLARATIONS=(", "\ufeffDECLARATIONS = ("])
def test_every_form_of_the_assignment_is_a_declaration(tmp_path, monkeypatch, form):
    """An annotation, no spaces, a BOM: a declaration the text test missed was no backbone, without a word."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.py").write_text(BACKBONE.replace("DECLARATIONS = (", form, 1), encoding="utf-8")
    monkeypatch.setattr(registry, "PACKAGE", tmp_path)
    assert list(registry._collect("models", "DECLARATIONS", registry.BackboneSpec, many=True)[0]) == ["tiny"]
    (tmp_path / "models" / "tiny.py").write_text("DECLARATIONS = ()\n")
    with pytest.raises(DeclarationError, match=r"tiny\.py: DECLARATIONS must be a tuple of BackboneSpec\(\.\.\.\), "
                                               r"at least one"):
        registry._collect("models", "DECLARATIONS", registry.BackboneSpec, many=True)


def test_the_grid_tables_are_scripts():
    """GRID_TABLES names the scripts whose default grid is the declarations' (a declaration's `tables` is checked
    against it): each is a registered script."""
    from experiments.registry import SCRIPTS
    from pcl.declarations import GRID_TABLES

    assert set(GRID_TABLES) <= set(SCRIPTS)
    for spec in [*registry.methods().values(), *registry.backbones().values()]:
        assert set(spec.tables) <= set(GRID_TABLES)


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False),
                    st.sampled_from(["net", "peer{j}", "peers", "table2", "x", ""]),
                    st.tuples(st.sampled_from(["table2", "imagenet", "nope"])))


@given(field=st.sampled_from(["name", "display", "deployed", "views", "tables", "relative_cost", "order",
                              "in_paper", "distills", "heads", "options", "tabels"]), value=_VALUES)
def test_any_field_value_gives_a_declaration_or_a_declaration_error(tmp_path_factory, field, value):
    """A method declaration with one field set to any literal: a MethodSpec, or a DeclarationError naming the
    file; never another exception (a traceback into the constructors)."""
    path = tmp_path_factory.mktemp("d") / "m.py"
    source = ("DECLARATION = MethodSpec(name='x', display='X', citation='c', trains='t', deploys='d',\n"
              f"    heads=(Head('net', 'network'),), deployed='net', {field}={value!r})\n")
    path.write_text(source.replace(f", {field}='net')", ")") if field == "deployed" else source)
    try:
        spec = read_declaration(path, "DECLARATION")
    except DeclarationError as err:
        assert str(err).startswith("m.py:")
    else:
        assert isinstance(spec, MethodSpec)


@pytest.mark.slow
def test_a_declaration_mistake_is_each_commands_one_line_and_exit_2(tmp_path):
    """The registry is read while a command imports its modules: a mistake in a declaration ended a traceback
    of 20-25 lines (exit 1). In every command of the suite it is the mistake's one line, exit 2
    (pcl.registry.declaration_failed). Run on a copy of the repository whose baseline declaration has a misspelled
    field, then with kd's `names` misspelled (checked as pcl.schema is imported)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    copy = tmp_path / "repo"
    for name in filter(None, (f.decode() for f in files)):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((ROOT / name).read_bytes())
    baseline = copy / "pcl" / "methods" / "baseline.py"
    baseline.write_text(baseline.read_text().replace("tables=(", "tabels=(", 1))
    (copy / "store").mkdir()
    said = "error: pcl/methods/baseline.py:18: DECLARATION: MethodSpec has no field 'tabels' (its fields: name, "
    env = {**os.environ, "PYTHONPATH": str(copy)}
    env.pop("PCL_MONGO_URL", None)
    commands = (["experiments/table2.py", "plan", "with", "dataset=cifar100"], ["ablations/peers.py", "plan"],
                ["analysis/make_tables.py", "--store", "store"], ["analysis/report.py", "--store", "store"],
                ["slurm/status.py", "--executor", "local"], ["slurm/launch_all.py", "--dry-run", "--executor", "local"],
                ["-m", "pcl.docs"], ["-m", "pcl.tracking", "ping"], ["-m", "pcl.distributed", "--help"],
                ["bench/throughput.py", "--help"])
    for command in commands:
        out = subprocess.run([sys.executable, *command], cwd=copy, env=env, capture_output=True, text=True,
                             timeout=120)
        assert (out.returncode, out.stdout) == (2, ""), (command, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith(said), (command, out.stderr)
    baseline.write_text((ROOT / "pcl" / "methods" / "baseline.py").read_text())
    kd = copy / "pcl" / "methods" / "kd.py"
    kd.write_text(kd.read_text().replace('names="backbone"', 'names="backbon"', 1))
    for command in (["experiments/two_stage.py", "plan"], ["-m", "pcl.tracking", "ping"]):
        out = subprocess.run([sys.executable, *command], cwd=copy, env=env, capture_output=True, text=True,
                             timeout=120)
        assert (out.returncode, out.stderr) == (2, "error: pcl/methods/kd.py: method 'kd': option 'teacher_backbone': "
                                                   "names='backbon' is no config key (e.g. backbone, method, dataset); "
                                                   "did you mean 'backbone'?\n"), (command, out.stderr)


def test_outside_a_command_a_declaration_mistake_is_the_exception_itself(tmp_path, monkeypatch):
    """pytest, a notebook, a user's program: the DeclarationError (a SystemExit aborted a pytest session with an
    INTERNALERROR where a collection error was due); an editor's lock file beside the declarations is no file
    of them (a link to nothing: every command crashed reading it)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.py").write_text(BACKBONE.replace("params=", "prams="))
    (tmp_path / "models" / ".#tiny.py").symlink_to(tmp_path / "user@host.1234")
    monkeypatch.setattr(registry, "PACKAGE", tmp_path)
    registry._backbones.cache_clear()
    try:
        with pytest.raises(DeclarationError, match=r"tiny\.py:2: DECLARATIONS: BackboneSpec has no field 'prams'"):
            registry.backbones()
        (tmp_path / "models" / "tiny.py").write_text(BACKBONE)
        registry._backbones.cache_clear()
        assert list(registry.backbones()) == ["tiny"]
    finally:
        registry._backbones.cache_clear()
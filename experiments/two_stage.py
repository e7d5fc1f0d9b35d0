"""Online vs two-stage (offline) distillation: PCL against Hinton-style KD from a pre-trained teacher.

Reproduces the paper's comparison with two-stage KD: stage 1 trains the teacher (default: a ResNet-110
baseline, `teacher_method`/`teacher_backbone`); stage 2 trains the student backbone (default ResNet-32) with
`kd` (CE + KD at T = 3), its `teacher_path` resolved from the teacher run's record (teacher run_key -> deployed.pt);
PCL and the plain baseline on the student backbone are the comparison (the same run_keys as in table2, so runs done
there are skipped here). For each seed the teacher runs before its student. Numbers: unknown here.

    python experiments/two_stage.py with dataset=cifar100
    python experiments/two_stage.py with teacher_backbone=wrn20_8 method=kd seeds=[0]
"""
from __future__ import annotations


from experiments.cli import cli
from experiments.common import axis, check_dataset, make_experiment
from pcl import registry, schema
from pcl.declarations import GRID_TABLES

#: the students compared, from the declarations: the methods that list this table (pcl.registry)
STUDENT_METHODS = registry.table_methods("two_stage")


def grid(cfg: dict) -> list[dict]:
    check_dataset(cfg, GRID_TABLES["two_stage"])
    # the teacher's method and backbone, checked as what they are under the names the user set
    schema.KEYS["method"].check(cfg["teacher_method"], as_key="teacher_method")
    schema.KEYS["backbone"].check(cfg["teacher_backbone"], as_key="teacher_backbone")
    schema.check_backbone_dataset(cfg["teacher_backbone"], cfg["dataset"], as_key="teacher_backbone")
    teacher = {"label": f"teacher {cfg['teacher_method']}/{cfg['teacher_backbone']}",
               "method": cfg["teacher_method"], "backbone": cfg["teacher_backbone"]}
    cells = [teacher]
    for backbone in axis(cfg["backbone"], ("resnet32",), "backbone"):
        for method in axis(cfg["method"], STUDENT_METHODS, "method"):
            cell = {"label": f"{method}/{backbone}", "method": method, "backbone": backbone}
            if method == "kd":
                cell.update(teacher=teacher, options={"teacher_backbone": cfg["teacher_backbone"]},
                            label=f"kd/{backbone} <- {cfg['teacher_method']}/{cfg['teacher_backbone']}")
            cells.append(cell)
    return cells


ex = make_experiment("two_stage", grid, doc=__doc__, script=__file__,
                     defaults={"method": None, "backbone": "resnet32", "teacher_method": "baseline",
                               "teacher_backbone": "resnet110"},
                     smoke={"teacher_backbone": "tiny_resnet8"},
                     set_with={"teacher_run_key": "teacher_method= and teacher_backbone= (this grid's teacher run)",
                               "options.teacher_backbone": "teacher_backbone="})

if __name__ == "__main__":
    cli(ex)

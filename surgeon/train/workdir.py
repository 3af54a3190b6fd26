"""The work directory of a run in progress (layout in surgeon.train.resume): opened fresh or for a
resume, checked against the recipe, and renamed into the run directory when every cell is done."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from surgeon.errors import SurgeonError

RUN_FORMAT = "surgeon-partial-run/1"
PARTIAL_MARK = ".surgeon-partial"


def partial_dir(out: Path) -> Path:
    """The work directory of the run whose output is `out`."""
    out = Path(out).expanduser().resolve()
    return out.parent / f".{out.name}{PARTIAL_MARK}"


def resumable(work: Path) -> bool:
    """A work directory holds a run to continue once its run.json is there (written last, by rename)."""
    return (work / "run.json").is_file()


def locate(out: Path, resume: str) -> tuple[Path, Path]:
    """(run directory, work directory) for --resume auto | RUN | WORK."""
    if resume == "auto":
        return Path(out).expanduser().resolve(), partial_dir(out)
    given = Path(resume).expanduser().resolve()
    if given.name.startswith(".") and given.name.endswith(PARTIAL_MARK):
        return given.parent / given.name[1:-len(PARTIAL_MARK)], given
    return given, partial_dir(given)


class WorkDir:
    def __init__(self, path: Path, out: Path, writer: bool):
        self.path, self.out, self.writer = path, out, writer
        self.fresh = None  # (recipe, identity) of a run to start; None when resuming

    @classmethod
    def open(cls, recipe, out: Path, cells: list[str], *, force: bool, resume: str | None, inputs=(),
             writer: bool = True) -> "WorkDir":
        from surgeon.io.atomic import check_output
        from surgeon.train.resume import first_difference, identity

        ident = {"recipe": identity(recipe.model_dump(mode="json")), "cells": cells}
        if resume:
            out, work = locate(out, resume)
            if not resumable(work):
                if out.is_dir() and (out / "results.json").is_file():
                    raise SurgeonError(f"--resume: {out} is a finished run, there is nothing to resume "
                                       "(train again with --force, without --resume)")
                raise SurgeonError(f"--resume: no interrupted run to continue at {out} "
                                   f"(looked for {work}); start one without --resume")
            check_output(out, force=force, inputs=inputs)
            saved = json.loads((work / "run.json").read_text())
            diff = first_difference(saved.get("identity"), ident)
            if diff:
                raise SurgeonError(f"--resume: {work} is a run of another recipe, model or selection of cells "
                                   f"({diff}); start over with --force or choose another --out")
            return cls(work, out, writer)
        out = check_output(out, force=force, inputs=inputs)
        work = partial_dir(out)
        if resumable(work) and not force:
            raise SurgeonError(f"{out}: an interrupted run of it is in {work}; continue it with --resume, "
                               "or pass --force to start over")
        self = cls(work, out, writer)
        self.fresh = (recipe, ident)
        return self

    def create(self) -> None:
        """Start the work directory of a fresh run (after every process has checked, see open)."""
        from surgeon.recipes.load import dump_recipe

        if not self.writer or self.fresh is None:
            return
        recipe, ident = self.fresh
        tmp = self.path.parent / f"{self.path.name}.new-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir(parents=True)
            (tmp / "recipe.toml").write_text(dump_recipe(recipe))
            (tmp / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "out": str(self.out),
                                                      "identity": ident}, indent=2) + "\n")
            if self.path.exists():  # an interrupted run replaced with --force, or an unfinished start
                shutil.rmtree(self.path)
            os.rename(tmp, self.path)  # appears with its run.json or not at all
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise SurgeonError(f"{self.out}: cannot write the run here: {e.strerror or e}") from None

    # -- cells ------------------------------------------------------------------------------------
    def finished_cells(self) -> dict[str, dict]:
        folder = self.path / "cells"
        if not folder.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text())["result"] for p in sorted(folder.glob("*.json"))}

    def finish_cell(self, name: str, result: dict, log_bytes: int) -> None:
        folder = self.path / "cells"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{name}.json.tmp"
        tmp.write_text(json.dumps({"result": result, "log_bytes": log_bytes}) + "\n")
        os.replace(tmp, folder / f"{name}.json")
        shutil.rmtree(self.path / "resume" / name, ignore_errors=True)

    def log_bytes(self) -> int | None:
        """Length of metrics.jsonl at the newest state to continue from (None: a fresh run)."""
        from surgeon.train.resume import Checkpoints

        sizes = [0]
        for p in (self.path / "cells").glob("*.json") if (self.path / "cells").is_dir() else []:
            sizes.append(json.loads(p.read_text())["log_bytes"])
        resume = self.path / "resume"
        for cell in resume.iterdir() if resume.is_dir() else []:
            latest = Checkpoints(cell).latest()
            if latest is not None:
                sizes.append(json.loads((latest / "state.json").read_text())["progress"]["log_bytes"])
        return max(sizes)

    def has_progress(self) -> bool:
        resume = self.path / "resume"
        ckpts = resume.is_dir() and any(resume.glob("*/ckpt-*"))
        return bool(ckpts or self.finished_cells())

    # -- the end ------------------------------------------------------------------------------------
    def complete(self, force: bool) -> Path:
        """Drop the resumable states and rename the work directory into the run directory."""
        shutil.rmtree(self.path / "resume", ignore_errors=True)
        shutil.rmtree(self.path / "cells", ignore_errors=True)
        (self.path / "run.json").unlink(missing_ok=True)
        out = self.out
        if out.exists():
            if not force:  # appeared while we worked
                raise SurgeonError(f"{out} exists; pass --force to replace it")
            old = out.parent / f".{out.name}.surgeon-tmp-old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
            os.rename(self.path, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.path, out)
        return out

    def abandon(self) -> None:
        """After a failure: keep the work directory when it can be resumed from, else remove it."""
        if self.writer and self.path.exists() and not self.has_progress():
            shutil.rmtree(self.path, ignore_errors=True)

"""The work directory of a run in progress (layout in surgeon.train.resume): opened fresh or for a
resume, checked against the recipe, and renamed into the run directory when every cell is done."""
from __future__ import annotations

import json
import os
import shutil
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
    def __init__(self, path: Path, out: Path, writer: bool, lock=None):
        self.path, self.out, self.writer = path, out, writer
        self.fresh = None  # (recipe, identity) of a run to start; None when resuming
        self.lock = lock  # the writer's OutputLock on `out`, held until complete() or the process ends

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @staticmethod
    def _lock(out: Path, writer: bool):
        """The writer (rank 0) locks the run for its whole life: a second `train --force` or a `--resume`
        while it runs stops with one line naming it, instead of both writing the same directory."""
        from surgeon.io.lock import OutputLock

        return OutputLock(Path(out).expanduser().resolve(), "run") if writer else None

    @classmethod
    def open(cls, recipe, out: Path, cells: list[str], *, force: bool, resume: str | None, inputs=(),
             writer: bool = True) -> "WorkDir":
        from surgeon.io.atomic import check_output
        from surgeon.train.resume import identity

        ident = {"recipe": identity(recipe.model_dump(mode="json")), "cells": cells}
        if resume:
            out, work = locate(out, resume)
            lock = cls._lock(out, writer)
            try:
                return cls._open_resume(out, work, ident, force, inputs, writer, lock)
            except BaseException:
                if lock is not None:
                    lock.release()
                raise
        out = check_output(out, force=force, inputs=inputs)
        lock = cls._lock(out, writer)
        work = partial_dir(out)
        if resumable(work) and not force:
            if lock is not None:
                lock.release()
            raise SurgeonError(f"{out}: an interrupted run of it is in {work}; continue it with --resume, "
                               "or pass --force to start over")
        self = cls(work, out, writer, lock)
        self.fresh = (recipe, ident)
        return self

    @classmethod
    def _open_resume(cls, out, work, ident, force, inputs, writer, lock) -> "WorkDir":
        from surgeon.io.atomic import check_output
        from surgeon.train.resume import first_difference

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
        return cls(work, out, writer, lock)

    def create(self) -> None:
        """Start the work directory of a fresh run (after every process has checked, see open)."""
        from surgeon.recipes.load import dump_recipe

        if not self.writer or self.fresh is None:
            return
        from surgeon.io.atomic import remove_stale_temps, replace_path, temp_path

        recipe, ident = self.fresh
        tmp = temp_path(self.path, "new")
        try:
            remove_stale_temps(self.path)
            tmp.mkdir(parents=True)
            (tmp / "recipe.toml").write_text(dump_recipe(recipe))
            (tmp / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "out": str(self.out),
                                                      "identity": ident}, indent=2) + "\n")
            # appears with its run.json or not at all; an interrupted run replaced with --force goes
            replace_path(tmp, self.path)
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
        """Rename the work directory into the run directory, then drop what only a resume needed.

        In this order a kill at any moment leaves a findable run: before the swap the work directory is
        still resumable (its run.json is there); after it the run directory is complete (its results are
        in), at worst with the resume states still inside, which the next write of it replaces."""
        from surgeon.io.atomic import replace_path

        out = self.out
        if (out.exists() or out.is_symlink()) and not force:  # appeared while we worked
            raise SurgeonError(f"{out} exists; pass --force to replace it")
        replace_path(self.path, out)
        (out / "run.json").unlink(missing_ok=True)
        shutil.rmtree(out / "resume", ignore_errors=True)
        shutil.rmtree(out / "cells", ignore_errors=True)
        self.release()
        return out

    def abandon(self) -> None:
        """After a failure: keep the work directory when it can be resumed from, else remove it."""
        if self.writer and self.path.exists() and not self.has_progress():
            shutil.rmtree(self.path, ignore_errors=True)
        self.release()

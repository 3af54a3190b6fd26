"""Registers the "ctc" task in surgeon.train.tasks.TASKS (get_task imports this module on demand)."""
from surgeon.speech.ctc_task import CTCTask
from surgeon.train.tasks import TASKS

TASKS.setdefault("ctc", CTCTask())

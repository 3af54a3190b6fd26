"""Recipes: one TOML file describes a training job (issue 5; docs/recipes.md).

schema.py    the pydantic models (strict: unknown keys are errors with a did-you-mean)
load.py      TOML -> --set overrides -> path resolution -> validation, all errors in one line
bundled.py   the recipes shipped in the surgeon_recipes package (surgeon recipes ls / cp)
validate.py  surgeon validate: model, method, dataset and device resolved without training

Importing this package and schema/load is light (no torch): the CLI validates before any heavy import.
"""

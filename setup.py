"""Package discovery with renames; all other metadata lives in pyproject.toml."""
from setuptools import find_packages, setup

RENAMED = {"surgeon_cli": "cli", "surgeon_recipes": "recipes"}  # import name -> folder

packages = find_packages(include=["surgeon", "surgeon.*"])
package_dir = {}
for name, folder in RENAMED.items():
    package_dir[name] = folder
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"surgeon_recipes": ["*.toml", "**/*.toml"]},
)

from __future__ import annotations

import modelyard


def test_all_is_exactly_the_public_api() -> None:
    public = {name for name in dir(modelyard) if not name.startswith("_")}
    public -= {"annotations"}  # from __future__
    submodules = {name for name in public if type(getattr(modelyard, name)).__name__ == "module"}
    assert set(modelyard.__all__) - {"__version__"} == public - submodules

"""The extension-point registry: names in order, one registration per name, unknown names a UserError
naming the choices; and every registry users extend is one (layouts, formats, commands)."""

import pytest

from infomin_det.errors import UserError
from infomin_det.registry import Registry


def test_register_get_order_and_decorator():
    r: Registry = Registry("report format")
    r.register("b", 2)

    @r.register("a")
    def f():
        return 1

    assert list(r) == ["b", "a"] and r.get("a") is f and r["b"] == 2 and "a" in r and len(r) == 2
    assert r.items() == [("b", 2), ("a", f)]


def test_a_name_is_registered_once_and_unknown_names_list_the_choices():
    r: Registry = Registry("checkpoint layout")
    r.register("moco", 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("moco", 2)
    with pytest.raises(ValueError, match="non-empty name"):
        r.register("", 3)
    with pytest.raises(UserError) as e:
        r.get("mocov9")
    assert e.value.cause == "unknown checkpoint layout 'mocov9'" and e.value.fix == "one of: moco"


def test_the_extension_points_are_registries():
    from infomin_det.cli import SUBCOMMANDS
    from infomin_det.convert.layouts import LAYOUTS
    from infomin_det.report.render import RENDERERS

    for reg in (SUBCOMMANDS, LAYOUTS, RENDERERS):
        assert isinstance(reg, Registry)
    assert list(LAYOUTS)[0] == "torchvision/timm" and "moco-v1/v2" in LAYOUTS
    assert [(f.name, f.suffix) for f in RENDERERS.values()] == [("markdown", ".md"), ("latex", ".tex"),
                                                                ("csv", ".csv"), ("json", ".json")]
    assert "report" in SUBCOMMANDS and SUBCOMMANDS["report"][0] == "infomin_det.report.cli"

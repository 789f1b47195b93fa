import pytest

from connbench.registry import Option, Registry, SpecError, format_spec, split_spec


@pytest.fixture
def reg():
    r = Registry("widget")

    @r.register("banded", "a band", [Option("width", int, 3), Option("cyclic", bool, False)])
    class Banded:
        pass

    @r.register("random", "sparse", [Option("density", float, 0.1), Option("seed", int, 0)])
    class Random:
        pass

    return r


def test_parse_types_and_defaults(reg):
    entry, opts = reg.parse("banded:width=5,cyclic=true")
    assert entry.name == "banded" and opts == {"width": 5, "cyclic": True}
    _, opts = reg.parse("random:seed=3")
    assert opts == {"density": 0.1, "seed": 3}


def test_canonical_is_order_independent(reg):
    a = reg.canonical("random:seed=3,density=0.2")
    b = reg.canonical("random:density=0.20,seed=3")
    assert a == b == "random:density=0.2,seed=3"
    assert reg.canonical("banded") == "banded:cyclic=false,width=3"


def test_unknown_name_did_you_mean(reg):
    with pytest.raises(SpecError, match=r"did you mean 'banded'.*known: banded, random"):
        reg.get("bandd")


def test_unknown_option_lists_allowed(reg):
    with pytest.raises(SpecError) as e:
        reg.parse("banded:widht=5")
    msg = str(e.value)
    assert "'widht'" in msg and "did you mean 'width'" in msg
    assert "width (int, default 3)" in msg and "cyclic (bool, default false)" in msg


@pytest.mark.parametrize("spec,needle", [
    ("banded:width=abc", "width='abc' is not a valid int"),
    ("banded:width=2.5", "width='2.5' is not a valid int"),
    ("banded:cyclic=maybe", "cyclic='maybe' is not a valid bool"),
    ("random:density=lots", "density='lots' is not a valid float"),
    ("banded:width", "malformed option 'width'"),
    ("banded:width=3,width=5", "given twice"),
    ("", "empty spec"),
])
def test_bad_specs(reg, spec, needle):
    with pytest.raises(SpecError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        reg.parse(spec)


def test_choices_and_list(reg):
    r = Registry("thing")
    r.register("a", "first", [Option("mode", str, "x", choices=("x", "y"))])(object)
    with pytest.raises(SpecError, match="choose one of x, y"):
        r.parse("a:mode=z")
    listing = r.list()
    assert listing == [{"name": "a", "description": "first", "options": {
        "mode": {"type": "str", "default": "x", "help": "", "choices": ["x", "y"]}}}]


def test_double_registration_rejected(reg):
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("banded", "again")(object)


def test_split_and_format_roundtrip():
    name, raw = split_spec(" lowrank : rank = 8 ")
    assert (name, raw) == ("lowrank", {"rank": "8"})
    assert format_spec("x", {"b": True, "a": 0.5}) == "x:a=0.5,b=true"

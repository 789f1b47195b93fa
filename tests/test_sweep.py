"""Sweep files: expansion, rules, overrides, ids, budgets and every user mistake.

Most tests use a stand-in resolver (small registries with known checks and parameter
formulas) so that they are fast and independent of the torch modules; the last group
runs against the real registries and the shipped sweeps.
"""

from __future__ import annotations

import math
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connbench.plan import sweep as sw
from connbench.registry import Option, Registry, SpecError

# ----------------------------------------------------------------- a stand-in world


def _registries():
    conn = Registry("structure")
    cells = Registry("cell")
    tasks = Registry("task")

    def reg(registry, name, version=1, options=()):
        obj = type(name, (), {"version": version})
        registry.register(name, f"fake {name}", options)(obj)

    reg(conn, "full")
    reg(conn, "diagonal")
    reg(conn, "banded", options=[Option("width", int, 3), Option("cyclic", bool, False)])
    reg(conn, "block", options=[Option("groups", int, 4)])
    reg(conn, "butterfly")
    for name in ("rnn_tanh", "gru", "lstm"):
        reg(cells, name)
    reg(tasks, "copy", version=2, options=[Option("length", int, 100)])
    reg(tasks, "binary_addition", options=[Option("bits", int, 8)])
    return {"structure": conn, "cell": cells, "task": tasks}


GATES = {"rnn_tanh": 1, "gru": 3, "lstm": 4}


class FakeResolver(sw.Resolver):
    """Registries as above; checks and parameter counts by formula."""

    def __init__(self):
        super().__init__()
        self.regs = _registries()
        self.builds = 0

    def registry(self, kind):
        return self.regs[kind]

    def model_shape(self, task):
        return task

    def task_presets(self, spec):
        return ["trask"] if spec.startswith("binary_addition") else []

    def task_defaults(self, spec):
        entry, opts = self.regs["task"].parse(spec)
        if entry.name == "copy":
            return {"seq_len": opts["length"] + 20, "batch": 64}
        return {"seq_len": opts["bits"], "batch": 1}

    def check(self, structure, hidden):
        entry, opts = self.regs["structure"].parse(structure)
        if entry.name == "butterfly" and hidden & (hidden - 1):
            raise SpecError(f"butterfly needs a power-of-two hidden size, not {hidden}")
        if entry.name == "block" and hidden % opts["groups"]:
            raise SpecError(f"block: groups={opts['groups']} does not divide {hidden}")
        if entry.name == "banded" and opts["width"] % 2 == 0:
            raise SpecError(f"banded: width={opts['width']} must be odd")

    def _count(self, task, cell, structure, hidden, layers):
        self.builds += 1
        entry, opts = self.regs["structure"].parse(structure)
        h = hidden
        rec = {"full": h * h, "diagonal": h, "banded": opts.get("width", 0) * h,
               "block": h * h // max(opts.get("groups", 1), 1),
               "butterfly": 2 * h * int(math.log2(h)) if h > 1 else 2}[entry.name]
        g = GATES[cell]
        per_layer = g * (rec + h)  # recurrent + bias
        inputs = g * 10 * h + (layers - 1) * g * h * h
        return inputs + layers * per_layer + 10 * h + 10


@pytest.fixture
def resolver():
    return FakeResolver()


def write(tmp_path, text, name="s"):
    path = tmp_path / f"{name}.toml"
    path.write_text(textwrap.dedent(text))
    return path


BASIC = """
    tasks = ["copy:length=10", "binary_addition"]
    structures = ["full", "diagonal", "banded:width=3"]
    hidden = [16, 32]
    seeds = [0, 1]
    kinds = ["speed", "train"]

    [train]
    steps = 50

    [speed]
    seeds = [0]
"""


def load(tmp_path, text, resolver, **kw):
    return sw.load_sweep(write(tmp_path, text), resolver=resolver, **kw)


# -------------------------------------------------------------------------- expansion


def test_product_counts_per_kind(tmp_path, resolver):
    s = load(tmp_path, BASIC, resolver)
    by_kind = {p: [c for c in s.trials if c.kind == p] for p in ("speed", "train")}
    assert len(by_kind["train"]) == 2 * 3 * 2 * 2
    assert len(by_kind["speed"]) == 2 * 3 * 2 * 1  # [speed] seeds override
    assert len(s) == 36 and s.name == "s" and not s.skipped
    assert len({c.trial_id for c in s.trials}) == 36


def test_cell_fields_are_canonical_and_resolved(tmp_path, resolver):
    s = load(tmp_path, BASIC, resolver)
    c = next(c for c in s.trials if c.structure == "banded" and c.kind == "train"
             and c.task == "copy")
    assert c.structure_spec == "banded:cyclic=false,width=3"
    assert c.task_spec == "copy:length=10"
    assert c.seq_len == 30 and c.batch == 64  # the task's own
    assert c.cell == "rnn_tanh" and c.layers == 1 and c.device == "cpu"
    assert c.option("steps") == 50 and c.option("lr") is None
    assert dict(c.versions) == {"task": 2, "structure": 1, "harness": sw.HARNESS_VERSION}
    row = c.row_fields()
    assert row["task"] == "copy" and row["structure_spec"] == c.structure_spec
    assert row["hidden_request"] == str(c.hidden)
    assert c.to_dict()["options"] == {"steps": 50}
    assert c.to_dict()["versions"]["task"] == 2


def test_seq_len_applies_to_speed_not_train(tmp_path, resolver):
    s = load(tmp_path, BASIC, resolver, overrides=["seq_len=77"])
    assert {c.seq_len for c in s.trials if c.kind == "speed"} == {77}
    assert {c.seq_len for c in s.trials if c.kind == "train"} == {30, 8}
    with pytest.raises(SpecError, match="seq_len cannot be set for train"):
        load(tmp_path, BASIC.replace("steps = 50", "steps = 50\nseq_len = 9"), resolver)


def test_exclude_by_name_options_and_kind(tmp_path, resolver):
    text = BASIC + """
    [[exclude]]
    structure = "banded"
    hidden = 32

    [[exclude]]
    task = "copy:length=10"
    kind = "speed"
    """
    s = load(tmp_path, text, resolver)
    assert not [c for c in s.trials if c.structure == "banded" and c.hidden == 32]
    assert not [c for c in s.trials if c.task == "copy" and c.kind == "speed"]
    # 36 - banded@32 (train 4 + speed 2) - copy speed (6, of which 1 already gone)
    assert len(s) == 36 - 6 - 5


def test_exclude_options_must_all_match(tmp_path, resolver):
    text = BASIC + """
    [[exclude]]
    structure = "banded:width=5"
    """
    assert len(load(tmp_path, text, resolver)) == 36


def test_include_adds_cells_with_settings(tmp_path, resolver):
    text = BASIC + """
    [[exclude]]
    structure = "full"

    [[include]]
    task = "copy:length=200"
    structure = ["full", "diagonal"]
    kind = "train"
    hidden = 64
    steps = 500
    """
    s = load(tmp_path, text, resolver)
    added = [c for c in s.trials if c.task_spec == "copy:length=200"]
    assert len(added) == 2 * 2  # two structures x the sweep's two seeds
    assert {c.option("steps") for c in added} == {500}
    assert {c.hidden for c in added} == {64}
    assert any(c.structure == "full" for c in added)  # excludes never remove includes


def test_list_setting_is_an_axis(tmp_path, resolver):
    s = load(tmp_path, BASIC.replace("steps = 50", "steps = [50, 500]"), resolver)
    assert len([c for c in s.trials if c.kind == "train"]) == 48


def test_singular_and_plural_keys_are_the_same(tmp_path, resolver):
    plural = load(tmp_path, BASIC, resolver)
    singular = BASIC.replace("tasks =", "task =").replace("seeds = [0, 1]", "seed = [0, 1]")
    assert [c.trial_id for c in load(tmp_path, singular, resolver).trials] == [
        c.trial_id for c in plural.trials]
    with pytest.raises(SpecError, match="given twice"):
        load(tmp_path, BASIC + "\nseed = 3\n", resolver)


# ---------------------------------------------------------------------------- ids


def test_id_stable_under_key_and_option_reordering(tmp_path, resolver):
    a = load(tmp_path, """
        tasks = ["copy:length=10"]
        structures = ["banded:width=3", "block:groups=4"]
        hidden = 16
        kinds = ["train"]
        [train]
        steps = 5
        lr = 0.01
    """, resolver)
    b = sw.expand({
        "train": {"lr": 0.01, "steps": 5},
        "kinds": ["train"],
        "hidden": 16,
        "structures": ["block", "banded:cyclic=false,width=3"],
        "tasks": ["copy"],
    }, name="other", resolver=resolver)
    # copy defaults to length 100, so give it explicitly in a third spelling
    c = sw.expand({
        "kinds": ["train"], "hidden": [16], "tasks": "copy:length=10",
        "structures": ["block:groups=4", "banded:width=3,cyclic=false"],
        "train": {"lr": 0.01, "steps": 5}}, name="third", resolver=resolver)
    assert sorted(x.trial_id for x in a.trials) == sorted(x.trial_id for x in c.trials)
    # block == block:groups=4; copy != copy:length=10
    assert {x.trial_id for x in a.trials} != {x.trial_id for x in b.trials}
    assert [x for x in b.trials if x.structure == "block"][0].structure_spec == \
        "block:groups=4"


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_id_stable_under_any_reordering(rnd):
    resolver = FakeResolver()
    raw = {"tasks": ["copy:length=10"], "structures": ["banded:cyclic=false,width=3",
                                                           "block:groups=4"],
           "hidden": [16, 32], "seeds": [0, 1], "kinds": ["train", "speed"],
           "train": {"steps": 5, "lr": 0.01, "max_time_s": 9.0}, "speed": {"threads": 1}}
    ids = {c.trial_id for c in sw.expand(raw, name="x", resolver=resolver).trials}

    def shuffled(value):
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return rnd.sample(value, len(value))
        if isinstance(value, str) and ":" in value:
            name, opts = value.split(":")
            parts = opts.split(",")
            rnd.shuffle(parts)
            return f"{name}:{','.join(parts)}"
        return value

    again = sw.expand(shuffled(raw), name="y", resolver=resolver).trials
    assert {c.trial_id for c in again} == ids


def test_id_ignores_sweep_name_and_precision_settings(resolver):
    base = {"tasks": "copy", "structures": "full", "hidden": 8, "kinds": "speed"}
    one = sw.expand({**base, "speed": {"min_run_time": 0.1}}, name="a", resolver=resolver)
    two = sw.expand({**base, "speed": {"min_run_time": 1.0}}, name="b", resolver=resolver)
    assert one.trials[0].trial_id == two.trials[0].trial_id
    three = sw.expand({**base, "speed": {"threads": 1}}, name="a", resolver=resolver)
    assert three.trials[0].trial_id != one.trials[0].trial_id


def test_id_changes_with_code_versions(resolver, monkeypatch):
    raw = {"tasks": "copy", "structures": ["full", "diagonal"], "hidden": 8,
           "kinds": "train"}
    before = {c.structure: c.trial_id for c in sw.expand(raw, name="x", resolver=resolver).trials}
    resolver.regs["structure"].get("full").obj.version = 2
    after = {c.structure: c.trial_id for c in sw.expand(raw, name="x", resolver=resolver).trials}
    assert before["full"] != after["full"] and before["diagonal"] == after["diagonal"]
    resolver.regs["task"].get("copy").obj.version = 3
    task_bump = {c.structure: c.trial_id
                 for c in sw.expand(raw, name="x", resolver=resolver).trials}
    assert task_bump["diagonal"] != after["diagonal"]
    monkeypatch.setattr(sw, "HARNESS_VERSION", sw.HARNESS_VERSION + 1)
    harness_bump = {c.structure: c.trial_id
                    for c in sw.expand(raw, name="x", resolver=resolver).trials}
    assert harness_bump["diagonal"] != task_bump["diagonal"]


def test_duplicate_cells_collapse(resolver):
    raw = {"tasks": ["copy", "copy:length=100"], "structures": ["block", "block:groups=4"],
           "hidden": [8, 8], "kinds": "train"}
    assert len(sw.expand(raw, name="x", resolver=resolver).trials) == 1


def test_derive_recomputes_id(resolver):
    s = sw.expand({"tasks": "copy:length=10", "structures": "full", "hidden": 8,
                   "kinds": "train"}, name="x", resolver=resolver)
    cell = s.trials[0]
    longer = s.derive(cell, task_spec="copy:length=20")
    assert longer.seq_len == 40 and longer.trial_id != cell.trial_id
    same = s.derive(longer, task_spec="copy:length=10")
    assert same.trial_id == cell.trial_id and same == cell
    with pytest.raises(SpecError):
        s.derive(cell, structure_spec="butterfly", hidden=12)


# ---------------------------------------------------------------------- budgets


def test_iso_params_picks_the_closest_valid_size(resolver):
    budget = 20000
    s = sw.expand({"tasks": "copy", "structures": ["full", "diagonal", "butterfly"],
                   "hidden": f"iso_params:{budget}", "kinds": "train"},
                  name="x", resolver=resolver)
    for c in s.trials:
        assert c.hidden_request == f"iso_params:{budget}"
        sizes = [h for h in range(1, 4000) if _valid(resolver, c.structure_spec, h)]
        totals = {h: resolver.total_params(c.task_spec, c.cell, c.structure_spec, h, 1)
                  for h in sizes}
        best = min(totals, key=lambda h: (abs(totals[h] - budget), h))
        assert c.hidden == best, c.structure
    chosen = {c.structure: c.hidden for c in s.trials}
    assert chosen["full"] < chosen["diagonal"]
    assert chosen["butterfly"] & (chosen["butterfly"] - 1) == 0


def _valid(resolver, spec, h):
    try:
        resolver.check(spec, h)
        return True
    except SpecError:
        return False


def test_iso_params_builds_few_models(resolver):
    sw.expand({"tasks": "copy", "structures": "full", "hidden": "iso_params:50000",
               "kinds": "train"}, name="x", resolver=resolver)
    assert resolver.builds <= 2 * math.ceil(math.log2(sw.MAX_HIDDEN)) + 2


def test_iso_params_out_of_reach_and_bad_budgets(resolver):
    with pytest.raises(SpecError, match="out of reach"):
        sw.expand({"tasks": "copy", "structures": "diagonal",
                   "hidden": "iso_params:10000000000", "kinds": "train"},
                  name="x", resolver=resolver)
    for bad in ("iso_params:0", "iso_param:5", "big", -3, 1.5, True):
        with pytest.raises(SpecError, match="hidden"):
            sw.parse_hidden(bad)
    assert str(sw.parse_hidden("iso_params:50_000")) == "iso_params:50000"
    assert sw.parse_hidden("64") == sw.HiddenRequest("size", 64)


# ---------------------------------------------------------------- invalid cells


INVALID = """
    tasks = "copy"
    structures = ["butterfly", "block:groups=3", "full"]
    hidden = [100, 64]
    kinds = ["train"]
"""


def test_impossible_cells_are_listed_together(tmp_path, resolver):
    with pytest.raises(SpecError) as err:
        load(tmp_path, INVALID, resolver)
    msg = str(err.value)
    assert "3 impossible cell(s)" in msg and "--skip-invalid" in msg
    assert "butterfly at hidden=100" in msg
    assert "block:groups=3 at hidden=100" in msg and "block:groups=3 at hidden=64" in msg
    assert "full" not in msg.replace("groups", "")


def test_skip_invalid_returns_skipped_cells(tmp_path, resolver):
    s = load(tmp_path, INVALID, resolver, skip_invalid=True)
    assert len(s.trials) == 3 and len(s.skipped) == 3
    cell, reason = s.skipped[0]
    assert cell.trial_id and "butterfly" in reason
    assert {c.trial_id for c in s.trials}.isdisjoint(c.trial_id for c, _ in s.skipped)


def test_excluding_impossible_cells_makes_the_sweep_valid(tmp_path, resolver):
    text = INVALID + """
    [[exclude]]
    structure = ["butterfly", "block"]
    hidden = 100

    [[exclude]]
    structure = "block:groups=3"
    """
    assert len(load(tmp_path, text, resolver)) == 3


# ---------------------------------------------------------------------- mistakes


def test_malformed_toml_names_the_line(tmp_path, resolver):
    path = write(tmp_path, 'tasks = ["copy"]\nhidden = [16,\nconnectivities = = "x"\n')
    with pytest.raises(SpecError, match=r"malformed TOML.*line 3"):
        sw.load_sweep(path, resolver=resolver)


@pytest.mark.parametrize("text, pattern", [
    ("hiden = 3", r"unknown key 'hiden' \(did you mean 'hidden'\?\)"),
    ("[trian]\nsteps = 3", r"unknown key 'trian' \(did you mean 'train'\?\)"),
    ("[train]\nstep = 3", r"unknown key 'step' \(did you mean 'steps'\?\)"),
    ("[speed]\nsteps = 3", r"\[speed\]: unknown key 'steps'"),
    ("[[exclude]]\nstructre = 'full'", r"did you mean 'structure'"),
])
def test_unknown_keys_get_did_you_mean(tmp_path, resolver, text, pattern):
    base = 'tasks = "copy"\nconnectivities = "full"\nhidden = 8\n'
    if not text.startswith("["):
        base, text = text + "\n", base
    with pytest.raises(SpecError, match=pattern):
        load(tmp_path, base + text, resolver)


@pytest.mark.parametrize("key, value, pattern", [
    ("structures", '"diagonl"', r"unknown structure 'diagonl' \(did you mean 'diagonal'"),
    ("tasks", '"copy:lenght=3"', r"no option 'lenght' \(did you mean 'length'"),
    ("cells", '"gruu"', r"did you mean 'gru'"),
    ("kinds", '"sped"', r"unknown kind 'sped' \(did you mean 'speed'"),
    ("dtype", '"float33"', r"did you mean 'float32'"),
    ("devices", '"gpu"', r"device 'gpu' is not allowed"),
    ("layers", "0", r"layers=0 must be an integer >= 1"),
    ("seeds", '"one"', r"seed='one' must be an integer"),
    ("hidden", "[]", r"hidden is empty"),
])
def test_bad_values_are_named(resolver, key, value, pattern):
    raw = {"tasks": "copy", "structures": "full", "hidden": 8}
    with pytest.raises(SpecError, match=pattern):
        sw.expand(raw, name="x", resolver=resolver, overrides=[f"{key}={value}"])


def test_missing_axes_and_empty_sweep(resolver):
    with pytest.raises(SpecError, match="missing structures, hidden"):
        sw.expand({"tasks": "copy"}, name="x", resolver=resolver)
    raw = {"tasks": "copy", "structures": "full", "hidden": 8,
           "exclude": [{"kind": ["speed", "memory", "train"]}]}
    with pytest.raises(SpecError, match="expands to no cells"):
        sw.expand(raw, name="x", resolver=resolver)


def test_unknown_sweep_name_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"unknown sweep 'smok' \(did you mean 'smoke'"):
        sw.sweep_path("smok")
    with pytest.raises(SpecError, match="does not exist"):
        sw.sweep_path(tmp_path / "nope.toml")


# ---------------------------------------------------------------------- overrides


def test_overrides_replace_axes_and_settings(tmp_path, resolver):
    s = load(tmp_path, BASIC, resolver, overrides=[
        "hidden=[128,512]", "seeds=[0,1,2]", "train.steps=7", "structures=diagonal",
        "speed.seeds=[5]", "tasks=copy:length=10"])
    assert {c.hidden for c in s.trials} == {128, 512}
    assert {c.seed for c in s.trials if c.kind == "train"} == {0, 1, 2}
    assert {c.seed for c in s.trials if c.kind == "speed"} == {5}
    assert {c.option("steps") for c in s.trials if c.kind == "train"} == {7}
    assert {c.structure for c in s.trials} == {"diagonal"}
    assert {c.task_spec for c in s.trials} == {"copy:length=10"}


def test_override_errors(resolver):
    raw = {"tasks": "copy", "structures": "full", "hidden": 8}
    with pytest.raises(SpecError, match=r"unknown key 'hiden' \(did you mean 'hidden'"):
        sw.expand(raw, name="x", resolver=resolver, overrides=["hiden=3"])
    with pytest.raises(SpecError, match=r"did you mean 'train.steps'"):
        sw.expand(raw, name="x", resolver=resolver, overrides=["train.step=3"])
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        sw.parse_override("hidden")
    with pytest.raises(SpecError, match="not a TOML value"):
        sw.parse_override("hidden=[1,")
    assert sw.parse_override("hidden=iso_params:500") == ("hidden", "iso_params:500")
    assert sw.parse_override("train.lr = 1e-3") == ("train.lr", 0.001)


def test_lookback_table_is_validated(resolver):
    raw = {"tasks": ["copy"], "structures": "full", "hidden": 8, "kinds": "train",
           "lookback": {"option": "length", "start": 10, "max": 1000, "resolution": 0.25}}
    s = sw.expand(raw, name="x", resolver=resolver)
    assert s.lookback == {"option": "length", "start": 10, "max": 1000, "resolution": 0.25}
    raw["lookback"]["option"] = "lenght"
    with pytest.raises(SpecError, match=r"no option 'lenght' \(did you mean 'length'"):
        sw.expand(raw, name="x", resolver=resolver)
    raw["lookback"] = {"start": 100, "max": 10}
    with pytest.raises(SpecError, match="above max"):
        sw.expand(raw, name="x", resolver=resolver)
    raw["lookback"] = {"strat": 100}
    with pytest.raises(SpecError, match="did you mean 'start'"):
        sw.expand(raw, name="x", resolver=resolver)


def test_with_task_option(resolver):
    s = sw.expand({"tasks": "copy:length=10", "structures": "full", "hidden": 8,
                   "kinds": "train", "lookback": {}}, name="x", resolver=resolver)
    assert s.lookback == {"option": "length"}
    probe = sw.with_task_option(s.trials[0], "length", 40, resolver=resolver)
    assert probe.task_spec == "copy:length=40" and probe.seq_len == 60
    assert probe.trial_id != s.trials[0].trial_id
    assert sw.with_task_option(probe, "length", 10, resolver=resolver) == s.trials[0]


# ------------------------------------------------- the real registries and sweeps


@pytest.fixture(scope="module")
def real():
    pytest.importorskip("torch")
    return sw.Resolver()


def test_shipped_sweeps_expand(real):
    assert {"smoke", "default", "paper", "trask", "lookback"} <= set(sw.shipped_sweeps())
    for name in ("smoke", "default", "trask", "lookback"):
        s = sw.load_sweep(name, resolver=real)
        assert s.trials and not s.skipped, name
        assert s.description
    # paper at fixed sizes only: its iso_params arm is slow to resolve, not wrong
    assert len(sw.load_sweep("paper", overrides=["hidden=[128]"], resolver=real)) > 1000


def test_smoke_covers_every_kind_and_a_budget(real):
    s = sw.load_sweep("smoke", resolver=real)
    assert {c.kind for c in s.trials} == {"speed", "memory", "train"}
    assert len(s) <= 15  # it must stay a smoke test
    budget = [c for c in s.trials if c.hidden_request.startswith("iso_params")]
    assert budget and budget[0].hidden % 4 == 0


def test_default_covers_every_task_and_structure(real):
    from connbench import tasks
    from connbench.nn import structures

    s = sw.load_sweep("default", resolver=real)
    train = [c for c in s.trials if c.kind == "train"]
    assert {c.task for c in train} == set(tasks.names())
    assert {c.structure for c in s.trials} == set(structures.names())


def test_real_impossible_sizes(real):
    raw = {"tasks": "copy", "structures": ["butterfly", "block:groups=3", "full"],
           "hidden": [100, 64], "kinds": "train"}
    with pytest.raises(SpecError, match=r"3 impossible cell\(s\)") as err:
        sw.expand(raw, name="x", resolver=real)
    assert "butterfly:init=default at hidden=100" in str(err.value)
    s = sw.expand(raw, name="x", resolver=real, skip_invalid=True)
    assert len(s.skipped) == 3 and len(s.trials) == 3


def test_real_iso_params_matches_brute_force(real):
    from connbench.nn.model import SequenceModel

    budget, task = 3000, "binary_addition"
    s = sw.expand({"tasks": task, "structures": ["full", "diagonal", "butterfly",
                                                     "random"],
                   "hidden": f"iso_params:{budget}", "kinds": "train"},
                  name="x", resolver=real)
    t = real._task(s.trials[0].task_spec)
    for c in s.trials:
        def total(h, c=c):
            return SequenceModel.for_task(t, hidden=h, cell=c.cell,
                                          structure=c.structure_spec).param_counts()["total"]
        # totals grow with the size, so beating both valid neighbours is the optimum
        spec, h = c.structure_spec, c.hidden
        below = next(x for x in range(h - 1, 0, -1) if _valid(real, spec, x))
        above = next(x for x in range(h + 1, 4 * h) if _valid(real, spec, x))
        gap = abs(total(h) - budget)
        assert gap <= abs(total(below) - budget) and gap < abs(total(above) - budget), spec
        assert total(below) < budget < total(above) + gap, spec


def test_cells_fit_the_schema_and_asdict(real):
    import dataclasses

    from connbench.results.schema import COLUMN_NAMES

    cell = next(c for c in sw.load_sweep("smoke", resolver=real).trials if c.kind == "train")
    assert set(cell.row_fields()) <= set(COLUMN_NAMES)
    plain = dataclasses.asdict(cell)
    assert plain["options"]["steps"] == cell.option("steps")
    assert plain["task"] == cell.task and plain["structure_spec"] == cell.structure_spec
    assert hash(cell) == hash(dataclasses.replace(cell))


def test_presets_are_checked_per_task(resolver):
    raw = {"tasks": "binary_addition", "structures": "full", "hidden": 16,
           "kinds": "train", "train": {"preset": "trask"}}
    assert sw.expand(raw, name="x", resolver=resolver).trials[0].option("preset") == "trask"
    raw["train"]["preset"] = "trsk"
    with pytest.raises(SpecError, match=r"no preset 'trsk' \(did you mean 'trask'"):
        sw.expand(raw, name="x", resolver=resolver)
    raw["train"]["preset"] = "trask"
    raw["tasks"] = ["binary_addition", "copy"]
    with pytest.raises(SpecError, match=r"task 'copy' has no preset 'trask'; its presets: none"):
        sw.expand(raw, name="x", resolver=resolver)


def test_first_release_key_names_still_load(tmp_path, resolver):
    """`connectivities` and `phases` (the first release's words) mean structures, kinds."""
    old = load(tmp_path, 'tasks = "copy"\nconnectivities = ["full", "diagonal"]\nhidden = 8\n'
                         'phases = ["train"]\n', resolver)
    new = load(tmp_path, 'tasks = "copy"\nstructures = ["full", "diagonal"]\nhidden = 8\n'
                         'kinds = ["train"]\n', resolver)
    assert [t.trial_id for t in old.trials] == [t.trial_id for t in new.trials]
    assert {t.structure for t in new.trials} == {"full", "diagonal"}


# -- iso_time -----------------------------------------------------------------------
class FakeTimer:
    """Step time = cost per weight x stored recurrent weights + a fixed overhead: full
    grows like H², diagonal like H. Records what it was asked to time."""

    WEIGHTS = {"full": lambda h: h * h, "diagonal": lambda h: h,
               "butterfly": lambda h: 2 * h * max(1, h.bit_length() - 1)}

    def __init__(self):
        self.calls = []

    def __call__(self, task, cell, structure, hidden, layers, batch, seq_len):
        self.calls.append((structure.split(":")[0], hidden, batch, seq_len))
        return 1e-6 + 1e-9 * self.WEIGHTS[structure.split(":")[0]](hidden)


def test_iso_time_matches_full_step_time_with_a_fake_timer():
    resolver = FakeResolver()
    timer = resolver.__dict__["step_timer"] = FakeTimer()
    s = sw.expand({"tasks": "copy:length=10", "structures": ["full", "diagonal", "butterfly"],
                   "hidden": "iso_time:64", "kinds": "train"}, name="x", resolver=resolver)
    by = {c.structure: c for c in s.trials}
    assert {c.hidden_request for c in s.trials} == {"iso_time:64"}
    assert by["full"].hidden == 64  # full at the reference is the reference
    # diagonal: 1e-9 * H = 1e-9 * 64² -> H = 4096; butterfly: 2H log2 H = 4096 -> H = 256
    assert by["diagonal"].hidden == 4096
    assert by["butterfly"].hidden == 256 and by["butterfly"].hidden & 255 == 0
    # timed at the cell's batch and length, and cheaply: a gallop and a bisection
    assert {(b, t) for _, _, b, t in timer.calls} == {(64, 30)}
    assert len(timer.calls) < 80
    assert len({c.trial_id for c in s.trials}) == 3


def test_iso_time_cache_is_per_machine_and_reused(tmp_path):
    from connbench.plan.iso_time import CachedTimer

    resolver = FakeResolver()
    measured = []

    def measure(task, cell, structure, hidden, layers, batch, seq_len):
        measured.append(hidden)
        return float(hidden)

    resolver._task = lambda spec: spec  # the fake measure needs no real task
    path = tmp_path / "iso_time.json"
    timer = CachedTimer(resolver, measure=measure, path=path)
    assert timer("copy:length=10", "rnn_tanh", "full", 8, 1, 32, 30) == 8.0
    assert timer("copy:length=10", "rnn_tanh", "full", 8, 1, 32, 30) == 8.0
    again = CachedTimer(resolver, measure=measure, path=path)  # a later expansion
    assert again("copy:length=10", "rnn_tanh", "full", 8, 1, 32, 30) == 8.0
    assert measured == [8] and path.exists()


def test_iso_time_bad_reference_is_one_line():
    with pytest.raises(SpecError, match="must be a positive integer"):
        sw.parse_hidden("iso_time:0")
    assert str(sw.parse_hidden("iso_time:128")) == "iso_time:128"


def test_iso_time_refuses_when_the_time_is_all_overhead():
    resolver = FakeResolver()
    resolver.__dict__["step_timer"] = lambda *a: 1e-3  # flat: no size is faster or slower
    with pytest.raises(SpecError, match="step time is overhead"):
        sw.expand({"tasks": "copy:length=10", "structures": ["full", "diagonal"],
                   "hidden": "iso_time:64", "kinds": "train"}, name="x", resolver=resolver)


def test_implementation_axis_defaults_to_fused_and_splits_ids(resolver):
    base = {"task": "copy", "structure": "full", "hidden": 8, "kind": "speed"}
    default = sw.expand(base, name="a", resolver=resolver).trials
    assert [t.implementation for t in default] == ["fused"]
    both = sw.expand({**base, "implementations": ["fused", "eager"]}, name="a",
                     resolver=resolver).trials
    assert sorted(t.implementation for t in both) == ["eager", "fused"]
    assert len({t.trial_id for t in both}) == 2
    assert default[0].trial_id in {t.trial_id for t in both}
    assert both[0].row_fields()["implementation"] == both[0].implementation
    assert sw.Trial.from_dict(both[1].to_dict()) == both[1]
    with pytest.raises(SpecError, match="implementation 'fast'.*fused, eager"):
        sw.expand({**base, "implementation": "fast"}, name="a", resolver=resolver)


def test_implementation_names_match_the_kernels():
    from connbench.nn.kernels.fused import IMPLEMENTATIONS

    assert sw.IMPLEMENTATIONS == IMPLEMENTATIONS


def test_train_role_is_checked_with_did_you_mean(tmp_path):
    path = tmp_path / "roles.toml"
    path.write_text(textwrap.dedent("""
        tasks = ["adding:length=4"]
        structures = ["full"]
        hidden = 8
        kinds = ["train"]
        [train]
        role = "lookbak"
    """))
    with pytest.raises(SpecError, match=r"role='lookbak'.*did you mean 'lookback'.*claim"):
        sw.load_sweep(str(path))
    path.write_text(path.read_text().replace("lookbak", "lookback"))
    cells = sw.load_sweep(str(path)).trials
    assert [c.option("role") for c in cells] == ["lookback"]

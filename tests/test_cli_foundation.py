import json

from connbench.cli import main


def test_list_shows_ten_structures_and_five_cells(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listing["structures"]] == [
        "full", "none", "diagonal", "banded", "jordan", "block", "block_shuffle", "butterfly",
        "random", "lowrank"]
    assert [e["name"] for e in listing["cells"]] == ["rnn_tanh", "rnn_relu", "rnn_sigmoid", "gru",
                                                     "lstm"]
    banded = next(e for e in listing["structures"] if e["name"] == "banded")
    width = banded["options"]["width"]
    assert width["type"] == "int" and width["default"] == 3
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "block_shuffle" in text and "width: int = 3" in text


def test_kernels_json(capsys):
    rc = main(["kernels", "--hidden", "16", "--batch", "2", "--steps", "3", "--threads", "1",
               "--min-run-time", "0.01", "--rounds", "2", "--structure", "diagonal",
               "--impl", "fused,eager", "--json"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {(r["structure"], r["implementation"], r["pass"]) for r in rows} == {
        *((c, i, p) for c in ("full", "diagonal") for i in ("fused", "eager")
          for p in ("fwd", "fwd+bwd")),
        ("torch.nn.RNN", "torch", "fwd"), ("torch.nn.RNN", "torch", "fwd+bwd"),
        ("floor", "-", "fwd"),  # the memory-traffic floor beside diagonal
    }
    for r in rows:
        assert set(r) >= {"structure", "pass", "us_per_step", "speedup_vs_full"}
        assert r["us_per_step"] > 0
    full = [r for r in rows if r["structure"] == "full"]
    assert all(r["speedup_vs_full"] == 1.0 for r in full)


def test_kernels_rejects_impossible_structure(capsys):
    assert main(["kernels", "--hidden", "12", "--structure", "butterfly"]) == 2
    assert "power of two" in capsys.readouterr().err

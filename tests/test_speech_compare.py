"""`surgeon compare` (paper 003 Tables 4 and 6) on evaluations written by hand: per-utterance counts,
the categorised improvements, reading eval JSON / details / run directories, and bad input."""
from __future__ import annotations

import json

import pytest

from surgeon.errors import SurgeonError
from surgeon.speech.compare import compare, load_evaluation

# key: (transcript, A's decoded text, B's decoded text)
CASE = {
    "u1": ("the motorcade route", "THE MOTORCADE ROUT", "THE MOTORCADE ROUTE"),      # B inserts E
    "u2": ("here a couple of piemen", "HERE A COUPLE OF PYE MEN", "HERE A COUPLE OF PIEMEN"),  # Y->I, space out
    "u3": ("truly", "TRULEY", "TRULY"),                                                # B deletes E
    "u4": ("the basket was upset", "THE BASKET WAS UPSET", "THE BASKET WAS A UPSET"),  # B inserts "A "
    "u5": ("a quantity of base gold", "A QUANTITY OF BASS GOLD", "A QUANTITY OF BAST GOLD"),  # S for S
    "u6": ("on the contrary", "ON THE CONTRARY", "ON THE CONTRARY"),                   # unchanged
}


def details(side: int, case=CASE, normalization: str = "vocab") -> dict:
    from surgeon.speech.ctc_task import CTCTally
    from surgeon.speech.text import Vocab

    tally = CTCTally(Vocab.librispeech(), normalization)
    tally.keys = list(case)
    tally.texts = [v[0] for v in case.values()]
    tally.decoded = [v[side] for v in case.values()]
    return tally.details()


def write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_stored_per_utterance_counts():
    doc = details(1)
    assert doc["format"] == "surgeon-asr-utterances/1" and doc["normalization"]["name"] == "vocab"
    u2 = doc["utterances"][1]
    assert u2 == {"key": "u2", "reference": "HERE A COUPLE OF PIEMEN", "hypothesis": "HERE A COUPLE OF PYE MEN",
                  "words": {"hits": 4, "substitutions": 1, "insertions": 1, "deletions": 0},
                  "chars": {"hits": 22, "substitutions": 1, "insertions": 1, "deletions": 0},
                  "transcript": "here a couple of piemen", "decoded": "HERE A COUPLE OF PYE MEN"}
    total = {k: sum(u["words"][k] for u in doc["utterances"]) for k in ("substitutions", "insertions", "deletions")}
    assert total == {k: doc["word_edits"][k] for k in total}


def test_compare_counts_equal_hand_counts():
    doc = compare({**details(1), "source": "a"}, {**details(2), "source": "b"})
    assert doc["num_utterances"] == 6
    assert doc["counts"] == {"improved": 3, "worse": 1, "changed_same_errors": 1, "unchanged": 1}
    # A -> B character edits on the improved utterances: u1 +E (I), u2 Y->I (S) and the space (D), u3 -E (D)
    assert doc["improvements"] == {"utterances": 3, "insertions": 1, "substitutions": 1, "deletions": 2,
                                   "shares": {"insertions": 0.25, "substitutions": 0.25, "deletions": 0.5}}
    assert doc["regressions"] == {"utterances": 1, "insertions": 2, "substitutions": 0, "deletions": 0,
                                  "shares": {"insertions": 1.0, "substitutions": 0.0, "deletions": 0.0}}
    # word errors against the references: A has ROUT, PYE(+MEN), TRULEY, BASS; B has A (inserted), BAST
    assert doc["a"]["word_edits"] == {"hits": 17, "substitutions": 4, "insertions": 1, "deletions": 0}
    assert doc["b"]["word_edits"] == {"hits": 20, "substitutions": 1, "insertions": 1, "deletions": 0}
    assert doc["a"]["wer"] == pytest.approx(5 / 21) and doc["b"]["wer"] == pytest.approx(2 / 21)
    assert [r["key"] for r in doc["changed"]] == ["u2", "u1", "u3", "u5", "u4"]  # best improvement first
    assert doc["changed"][0] == {"key": "u2", "reference": "HERE A COUPLE OF PIEMEN", "a": "HERE A COUPLE OF PYE MEN",
                                 "b": "HERE A COUPLE OF PIEMEN", "status": "improved", "word_errors": [2, 0],
                                 "char_errors": [2, 0],
                                 "edits": {"insertions": 0, "substitutions": 1, "deletions": 1}}
    assert doc["changed"][3]["status"] == "same_errors"


def test_normalize_rescores_from_the_raw_texts():
    case = {"k": ("Oswald's lunch-room", "OSWALD'S LUNCH ROOM", "OSWALDS LUNCH ROOM")}
    a, b = {**details(1, case), "source": "a"}, {**details(2, case), "source": "b"}
    assert compare(a, b)["counts"]["worse"] == 1  # the vocabulary spells the apostrophe
    plain = compare(a, b, "plain")  # paper 003 Table 4: no apostrophes
    assert plain["counts"] == {"improved": 0, "worse": 0, "changed_same_errors": 0, "unchanged": 1}
    assert plain["normalization"]["name"] == "plain" and plain["a"]["wer"] == 0.0


def test_reading_eval_json_details_and_run_directories(tmp_path):
    a, b = details(1), details(2)
    details_file = write(tmp_path / "b-test.json", b)
    eval_doc = {"format": "surgeon-eval/1", "cells": [{"name": "official-seed0", "test": {}, "details": a}]}
    eval_file = write(tmp_path / "eval.json", eval_doc)
    run = tmp_path / "run"
    (run / "details").mkdir(parents=True)
    write(run / "details" / "official-seed0-test.json", b)
    assert load_evaluation(eval_file)["source"] == f"{eval_file} [official-seed0]"
    assert load_evaluation(details_file)["utterances"] == b["utterances"]
    assert load_evaluation(run)["utterances"] == b["utterances"]
    assert compare(load_evaluation(eval_file), load_evaluation(run))["counts"]["improved"] == 3
    # several cells: --cell chooses
    write(run / "details" / "official-seed1-test.json", a)
    with pytest.raises(SurgeonError, match="2 cells .*choose one with --cell"):
        load_evaluation(run)
    assert load_evaluation(run, "official-seed1")["utterances"] == a["utterances"]
    with pytest.raises(SurgeonError, match="--cell nope: not in"):
        load_evaluation(run, "nope")


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["utterances"].pop(), "different utterances: 0 only in A, 1 only in B"),
    (lambda d: d["utterances"][0].update(reference="SOMETHING ELSE"), "the references differ"),
    (lambda d: d.update(normalization={**d["normalization"], "name": "plain"}), "--normalize NAME"),
    (lambda d: d.pop("utterances"), "only the worst utterances"),
])
def test_mismatched_evaluations_are_refused(tmp_path, mutate, needle):
    b = details(2)
    a = details(1)
    mutate(a)
    with pytest.raises(SurgeonError, match=needle):
        compare(load_evaluation(write(tmp_path / "a.json", a)), load_evaluation(write(tmp_path / "b.json", b)))


def test_cli_prints_writes_png_and_json(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = write(tmp_path / "a.json", details(1)), write(tmp_path / "b.json", details(2))
    r = cli("compare", a, b, "--show", "2")
    assert r.code == 0, r.err
    assert "3 improved, 1 worse" in r.out and "HERE A COUPLE OF PYE MEN" in r.out and "Table 6" in r.out
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("compare", a, b)  # the chart exists: refused, one line
    assert r.code == 2 and "--force" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("compare", a, b, "--json", "--plot", str(tmp_path / "c.png"))
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["format"] == "surgeon-asr-compare/1" and doc["improvements"]["deletions"] == 2
    assert (tmp_path / "c.png").is_file()


@pytest.mark.parametrize("args, needle", [
    (["missing.json", "b.json"], "no such file or directory"),
    (["bad.json", "b.json"], "cannot read JSON"),
    (["other.json", "b.json"], "not an evaluation with per-utterance results"),
    (["a.json", "b.json", "--normalize", "loud"], "unknown choice 'loud'"),
    (["a.json", "b.json", "--show", "-1"], "--show"),
])
def test_cli_bad_input_one_line_exit_2(cli, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "a.json", details(1))
    write(tmp_path / "b.json", details(2))
    (tmp_path / "bad.json").write_text("{not json")
    write(tmp_path / "other.json", {"format": "surgeon-results/1"})
    r = cli("compare", *args)
    assert r.code == 2 and needle in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "compare.png").exists()

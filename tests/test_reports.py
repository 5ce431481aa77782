"""reports/: typed tables, deterministic atomic files, Markdown, HTML and JUnit from records.

The records are built by hand (three implementations, two cases, both modes) so every
expectation below is known without running the harness.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from adamspec import reports
from adamspec.reports import (
    junit_xml,
    read_tables,
    summary_markdown,
    tiers,
    write_reports,
    write_tables,
)
from adamspec.reports.findings import case_anchor
from adamspec.reports.html import PLOTS, render_html, write_html
from adamspec.reports.junit import (
    BASELINE_CLASSNAME,
    JUnitCase,
    failed_row_case,
    junit_document,
    stale_baseline_case,
    xfail_case,
)
from adamspec.reports.markdown import VERDICT_SEVERITY, overview
from adamspec.reports.schema import (
    FINGERPRINT_COLUMNS,
    PAIR_COLUMNS,
    PROFILE_COLUMNS,
    RESULTS_COLUMNS,
    SEPARATION_COLUMNS,
    SUMMARY_COLUMNS,
    VERDICTS,
)
from adamspec.reports.tables import (
    FILES,
    SCHEMAS,
    SORT_KEYS,
    atomic_write,
    conform,
    frame,
    sort_table,
)

IMPLS = {
    # name: (framework, version, documented variant)
    "ours.Adam": ("adamspec", "0.1.0", "paper.algorithm1"),
    "torch.Adam": ("torch", "2.13.0", "torch.Adam"),
    "keras.Adam": ("keras", "3.11.0", "keras.Adam"),
}
CASES = ("float32.small", "float32.tiny_grad")
COMPONENTS = ("param", "m", "v")


def result_row(impl: str, case: str, mode: str, step: int, component: str, ulp: int) -> dict:
    framework, version, documented = IMPLS[impl]
    return {
        "implementation": impl,
        "framework": framework,
        "framework_version": version,
        "documented_variant": documented,
        "reference_variant": documented,
        "case": case,
        "regime": "normal" if case == "float32.small" else "tiny",
        "dtype": "float32",
        "precision": "float32",
        "mode": mode,
        "step": step,
        "component": component,
        "ulp_error": ulp,
        "bits_error": math.nan if ulp == -1 else math.log2(1 + ulp),
        "scaled_ulp": math.nan if ulp == -1 else ulp / 3.0,
        "outcome": "nan" if ulp == -1 else ("exact" if ulp == 0 else "ulp"),
        "coordinates": 4,
    }


def make_results() -> list[dict]:
    rows = []
    # keras.Adam has no results: one case skipped, the other crashed.
    for impl in ("ours.Adam", "torch.Adam"):
        for case in CASES:
            for step in range(1, 6):
                for comp in COMPONENTS:
                    ulp = 0 if impl == "ours.Adam" else step * (40 if case == CASES[1] else 1)
                    rows.append(result_row(impl, case, "lockstep", step, comp, ulp))
            for step in (1, 10, 100, 1000):
                ulp = 0 if impl == "ours.Adam" else step // 2
                rows.append(result_row(impl, case, "free", step, "param", ulp))
    # A NaN/inf mismatch: measurable only as a category, not in ULPs.
    rows.append(result_row("torch.Adam", CASES[1], "free", 5000, "param", -1))
    return rows


def summary_row(impl: str, case: str, verdict: str, **kw) -> dict:
    framework, version, documented = IMPLS[impl]
    row = {
        "implementation": impl,
        "framework": framework,
        "framework_version": version,
        "case": case,
        "dtype": "float32",
        "precision": "float32",
        "steps": 5,
        "max_ulp": 0,
        "median_ulp": 0.0,
        "max_free_ulp": 0,
        "worst_component": "param",
        "documented_variant": documented,
        "matched_variant": documented,
        "category": "rounding only",
        "verdict": verdict,
        "detail": "",
        "counterexample": "",
        "oracle_fallback_rate": 0.0,
        "claimed": documented,
        "tied_with": "",
        "first_failing_index": -1,
        "failing_coordinates": 0,
        "localization": "",
        "kernel_output": "",
    }
    row.update(kw)
    return row


def make_summary() -> list[dict]:
    return [
        summary_row("ours.Adam", CASES[0], "pass"),
        summary_row("ours.Adam", CASES[1], "pass"),
        summary_row("torch.Adam", CASES[0], "pass", max_ulp=5, median_ulp=3.0, max_free_ulp=500),
        summary_row(
            "torch.Adam",
            CASES[1],
            "discrepancy",
            max_ulp=200,
            median_ulp=120.5,
            max_free_ulp=-1,
            matched_variant="paper.eps_hat",
            category="eps placement",
            detail="eps inside | outside sqrt <b>",
        ),
        summary_row(
            "keras.Adam",
            CASES[0],
            "skipped",
            steps=0,
            max_ulp=None,
            median_ulp=None,
            max_free_ulp=None,
            detail="keras not installed",
        ),
        summary_row(
            "keras.Adam",
            CASES[1],
            "error",
            steps=0,
            max_ulp=None,
            median_ulp=None,
            max_free_ulp=None,
            detail="RuntimeError: boom\x1b[0m <script>",
        ),
    ]


VARIANTS = ("paper.algorithm1", "paper.eps_hat", "torch.Adam", "keras.Adam")


def make_fingerprints() -> list[dict]:
    errors = {
        "ours.Adam": {
            "paper.algorithm1": 0,
            "paper.eps_hat": 900,
            "torch.Adam": 0,
            "keras.Adam": 3000,
        },
        "torch.Adam": {
            "paper.algorithm1": 200,
            "paper.eps_hat": 1,
            "torch.Adam": 200,
            "keras.Adam": -1,
        },
    }
    rows = []
    for impl, by_variant in errors.items():
        ordered = sorted(
            by_variant, key=lambda v: math.inf if by_variant[v] == -1 else by_variant[v]
        )
        for variant, ulp in by_variant.items():
            rows.append(
                {
                    "implementation": impl,
                    "dtype": "float32",
                    "precision": "float32",
                    "variant": variant,
                    "rank": ordered.index(variant) + 1,
                    "max_ulp": ulp,
                    "param_max_ulp": max(ulp // 2, ulp),
                    "cases": 2,
                    "documented": variant == IMPLS[impl][2],
                    "within_budget": ulp == 0,
                    "formula": variant,
                    "within_cases": 2 if ulp == 0 else 1,
                    "failing_cases": "" if ulp == 0 else "b",
                }
            )
    return rows


def make_separation() -> list[dict]:
    rows = []
    relations = ["separated", "weak", "identical formula", "equal for this configuration"]
    for n, (a, b) in enumerate((a, b) for i, a in enumerate(VARIANTS) for b in VARIANTS[i + 1 :]):
        rows.append(
            {
                "variant_a": a,
                "variant_b": b,
                "max_ulp": [1000, 2, 0, 0, -1, 77][n],
                "component": "param",
                "case": CASES[n % 2],
                "relation": relations[n % 4],
            }
        )
    return rows


def make_profiles() -> list[dict]:
    """torch.Adam's failing case: every bin of a 1024-coordinate tensor, over budget from
    index 512 on (one bin a NaN/inf mismatch)."""
    rows = []
    for b in range(256):
        multiple = 0.5 if b < 128 else (math.inf if b == 200 else 40.0)
        where = {"tensor": 0, "first_index": 4 * b, "last_index": 4 * b + 3}
        rows.append({"implementation": "torch.Adam", "case": CASES[1], **where,
                     "max_multiple": multiple})  # fmt: skip
    return rows


def make_pairs() -> list[dict]:
    """A compiled implementation beside its eager twin on both cases, one case of a second
    pair not measured (its distances missing)."""
    rows = []
    same = {"implementation_formula": "keras.Adam", "counterpart_formula": "keras.Adam",
            "verdict": "same formula", "diverging_cases": "", "detail": "",
            "steps": 20}  # fmt: skip
    for n, (case, component) in enumerate((c, k) for c in CASES for k in COMPONENTS):
        rows.append({"implementation": "keras.Adam[xla]", "counterpart": "keras.Adam",
                     "case": case, "component": component, "first_step_ulp": n % 2,
                     "max_ulp": 3 * n, **same})  # fmt: skip
    unmeasured = {"case": CASES[0], "component": "", "first_step_ulp": None, "max_ulp": None}
    rows.append({"implementation": "torch.compile(torch.Adam)", "counterpart": "torch.Adam",
                 **unmeasured, **same, "verdict": "formula unknown",
                 "detail": "skipped: no compiler"})  # fmt: skip
    return rows


META = {"seed": 1234, "duration_s": 12.345, "adamspec_version": "0.1.0", "host": "ci"}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {
        "results": frame(make_results(), RESULTS_COLUMNS),
        "summary": frame(make_summary(), SUMMARY_COLUMNS),
        "fingerprints": frame(make_fingerprints(), FINGERPRINT_COLUMNS),
        "separation": frame(make_separation(), SEPARATION_COLUMNS),
        "profiles": frame(make_profiles(), PROFILE_COLUMNS),
        "pairs": frame(make_pairs(), PAIR_COLUMNS),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory, tables) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("reports") / "run"  # does not exist yet: must be created
    return out, write_reports(out, **tables, meta=META)


@pytest.fixture(scope="module")
def page(tables) -> str:
    return render_html(tables, META)


def empty_tables() -> dict[str, pd.DataFrame]:
    return {name: frame([], cols) for name, cols in SCHEMAS.items()}


# --------------------------------------------------------------------------- tables


def test_frame_rejects_a_missing_column_by_name():
    row = make_summary()[0]
    del row["verdict"]
    with pytest.raises(ValueError, match=r"summary row 0: missing columns \['verdict'\]"):
        frame([row], SUMMARY_COLUMNS)


def test_frame_rejects_an_extra_column_by_name():
    rows = make_separation()
    rows[2]["colour"] = "red"
    with pytest.raises(ValueError, match=r"row 2: unexpected columns \['colour'\]"):
        frame(rows, SEPARATION_COLUMNS)


def test_conform_rejects_a_dataframe_missing_a_column():
    df = pd.DataFrame(make_results()).drop(columns=["ulp_error"])
    with pytest.raises(ValueError, match=r"results table: missing columns.*ulp_error"):
        conform(df, RESULTS_COLUMNS)


def test_frame_has_stable_dtypes(tables):
    res, summ, fp, sep = (tables[n] for n in ("results", "summary", "fingerprints", "separation"))
    assert list(res.columns) == list(RESULTS_COLUMNS)
    assert res["ulp_error"].dtype == "int64" and res["step"].dtype == "int64"
    assert res["bits_error"].dtype == "float64" and res["scaled_ulp"].dtype == "float64"
    assert res["coordinates"].dtype == "int64"
    assert pd.api.types.is_string_dtype(res["implementation"])
    assert fp["documented"].dtype == bool and fp["within_budget"].dtype == bool
    assert fp["rank"].dtype == "int64" and sep["max_ulp"].dtype == "int64"
    # A skipped case has no measurement: nullable, not a fake 0 and not a float.
    assert summ["max_ulp"].dtype == "Int64" and summ["max_ulp"].isna().sum() == 2
    assert summ["median_ulp"].dtype == "float64"
    # The same dtypes for an empty table, so an empty run still writes typed files.
    empty = frame([], RESULTS_COLUMNS)
    assert empty.dtypes.equals(res.dtypes)


def test_frame_refuses_values_that_would_change():
    row = make_results()[0]
    with pytest.raises(ValueError, match="ulp_error"):
        frame([{**row, "ulp_error": 2.5}], RESULTS_COLUMNS)
    with pytest.raises(ValueError, match="ulp_error"):
        frame([{**row, "ulp_error": None}], RESULTS_COLUMNS)
    fp = make_fingerprints()[0]
    with pytest.raises(ValueError, match="documented"):
        frame([{**fp, "documented": "maybe"}], FINGERPRINT_COLUMNS)
    # Whole floats are integers; "False" from a CSV is False, not a truthy string.
    ok = frame([{**fp, "rank": 2.0, "documented": "False"}], FINGERPRINT_COLUMNS)
    assert ok.at[0, "rank"] == 2 and not ok.at[0, "documented"]


def test_tables_round_trip_with_dtypes(tmp_path, tables):
    write_tables(tmp_path, **tables)
    back = read_tables(tmp_path)
    assert set(back) == {"results", "summary", "fingerprints", "separation", "profiles",
                         "pairs"}  # fmt: skip
    for name, df in tables.items():
        pd.testing.assert_frame_equal(back[name], sort_table(df, name), check_exact=True)


def test_parquet_is_readable_with_the_right_dtypes(tmp_path, tables):
    write_tables(tmp_path, **tables)
    df = pd.read_parquet(tmp_path / "results.parquet", engine="pyarrow")
    assert list(df.columns) == list(RESULTS_COLUMNS)
    assert df["ulp_error"].dtype == "int64" and df["bits_error"].dtype == "float64"
    assert (df["ulp_error"] == -1).sum() == 1 and df["bits_error"].isna().sum() == 1
    keys = list(SORT_KEYS["results"])
    assert df[keys].equals(df[keys].sort_values(keys, kind="mergesort").reset_index(drop=True))


def test_csv_is_deterministic_whatever_the_input_order(tmp_path):
    shuffled = {
        "results": make_results(),
        "summary": make_summary(),
        "fingerprints": make_fingerprints(),
        "separation": make_separation(),
        "pairs": make_pairs(),
    }
    write_tables(tmp_path / "a", **shuffled)
    rng = random.Random(7)
    for rows in shuffled.values():
        rng.shuffle(rows)
    write_tables(tmp_path / "b", **shuffled)
    write_tables(tmp_path / "b", **shuffled)  # overwriting gives the same bytes again
    for name, file in FILES.items():
        a, b = (tmp_path / d / file for d in "ab")
        assert a.read_bytes() == b.read_bytes(), name


def test_csv_format(tmp_path, tables):
    write_tables(tmp_path, **tables)
    raw = (tmp_path / "summary.csv").read_bytes()
    assert b"\r" not in raw
    lines = raw.decode("utf-8").splitlines()
    assert lines[0] == ",".join(SUMMARY_COLUMNS)  # no index column
    assert len(lines) == 1 + len(tables["summary"])
    # Sorted by (implementation, case).
    firsts = [line.split(",")[:2] for line in lines[1:]]
    assert firsts == sorted(firsts)
    assert "120.5" in raw.decode() and ",-1," in raw.decode()


def test_floats_survive_the_csv_exactly(tmp_path):
    rows = make_separation()
    summary = make_summary()
    summary[0]["median_ulp"] = 0.1 + 0.2  # needs all 17 digits
    summary[1]["median_ulp"] = 5e-324
    write_tables(tmp_path, [], summary, [], rows)
    back = read_tables(tmp_path)["summary"]
    assert 0.1 + 0.2 in back["median_ulp"].tolist() and 5e-324 in back["median_ulp"].tolist()


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_failure_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "summary.csv"
    atomic_write(target, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


def test_invalid_table_writes_nothing(tmp_path, tables):
    bad = tables["separation"].drop(columns=["relation"])
    with pytest.raises(ValueError, match="relation"):
        write_reports(tmp_path / "out", **{**tables, "separation": bad}, meta=META)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_write_reports_writes_every_file_and_no_temp(written):
    out, paths = written
    expected = {
        "results.parquet",
        "summary.csv",
        "fingerprints.csv",
        "separation.csv",
        "index_profile.csv",
        "pairs.csv",
        "report.md",
        "report.html",
        "junit.xml",
        "meta.json",
    }
    assert {p.name for p in out.iterdir()} == expected
    assert {p.name for p in paths.values()} == expected
    assert all(p.parent == out for p in paths.values())
    text = (out / "meta.json").read_text()
    assert list(json.loads(text)) == sorted(META)


def test_write_reports_twice_is_byte_identical(tmp_path, written, tables):
    out, _ = written
    again = write_reports(tmp_path, **tables, meta=META)
    for name in ("summary", "fingerprints", "separation", "markdown", "junit", "meta"):
        assert again[name].read_bytes() == (out / again[name].name).read_bytes(), name


def test_package_exports_its_public_api():
    for name in reports.__all__:
        assert callable(getattr(reports, name)) or isinstance(getattr(reports, name), dict)


# --------------------------------------------------------------------------- markdown


def test_overview_is_the_worst_case_per_implementation(tables):
    ov = overview(tables["summary"], tables["fingerprints"]).set_index("implementation")
    assert ov.loc["torch.Adam", "verdict"] == "discrepancy"
    assert ov.loc["torch.Adam", "max_ulp"] == 200
    assert ov.loc["torch.Adam", "category"] == "eps placement"
    # Matched variant from the fingerprint's rank 1, over the whole problem set.
    assert ov.loc["torch.Adam", "matched_variant"] == "paper.eps_hat"
    assert ov.loc["keras.Adam", "verdict"] == "error"
    assert pd.isna(ov.loc["keras.Adam", "max_ulp"])
    assert ov.loc["ours.Adam", "verdict"] == "pass" and ov.loc["ours.Adam", "max_ulp"] == 0
    # Worst first.
    assert list(ov.index) == ["keras.Adam", "torch.Adam", "ours.Adam"]


def test_markdown_rows_counts_and_meta(tables):
    md = summary_markdown(tables["summary"], tables["fingerprints"], META)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(IMPLS)
    torch_row = next(r for r in rows if r.startswith("| torch.Adam "))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", torch_row)[1:-1]]
    assert cells == [
        "torch.Adam",
        "torch.Adam",
        "paper.eps_hat",
        "200",
        "eps placement",
        "**discrepancy (1/2)**",
    ]
    assert "3 pass · 0 range · 1 discrepancy · 1 skipped · 1 error" in md
    assert "seed 1234" in md and "12.3 s" in md and "adamspec 0.1.0" in md


def test_markdown_escapes_pipes_in_cells():
    summary = frame(
        [summary_row("ours.Adam", "a|b", "discrepancy", category="eps | placement")],
        SUMMARY_COLUMNS,
    )
    md = summary_markdown(summary, frame([], FINGERPRINT_COLUMNS), {})
    row = next(line for line in md.splitlines() if line.startswith("| ours.Adam"))
    assert "eps \\| placement" in row
    assert len(re.findall(r"(?<!\\)\|", row)) == 7  # 6 cells, no stray column


def test_markdown_stays_short_with_60_implementations():
    rows = [
        summary_row("ours.Adam", case, "pass", implementation=f"impl{i:02d}")
        for i in range(60)
        for case in CASES
    ]
    md = summary_markdown(frame(rows, SUMMARY_COLUMNS), frame([], FINGERPRINT_COLUMNS), META)
    assert len(md.splitlines()) <= 80
    assert "impl59" in md and "120 cases" in md


def test_skipped_placeholder_ulp_is_not_a_measurement():
    # The harness writes max_ulp=0 for a skipped case: not "0 ULP" in the report.
    summary = frame([summary_row("keras.Adam", c, "skipped", max_ulp=0) for c in CASES],
                    SUMMARY_COLUMNS)  # fmt: skip
    md = summary_markdown(summary, frame([], FINGERPRINT_COLUMNS), {})
    row = next(line for line in md.splitlines() if line.startswith("| keras.Adam"))
    assert "| — |" in row and "| 0 |" not in row


def test_markdown_of_nothing():
    md = summary_markdown(frame([], SUMMARY_COLUMNS), frame([], FINGERPRINT_COLUMNS), {})
    assert "0 pass" in md and "seed —" in md


# --------------------------------------------------------------------------- html

IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def test_html_is_self_contained(page):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page
    assert len(IMG.findall(page)) == len(PLOTS) == 6


def test_html_plots_are_pngs(page):
    import base64

    for data in IMG.findall(page):
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")


def test_html_has_the_summary_and_escapes_record_text(page):
    assert "torch.Adam" in page and "eps placement" in page
    # The crash message holds a <script> tag and a terminal escape: escaped, not live.
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "eps inside | outside sqrt &lt;b&gt;" in page


def test_html_survives_empty_frames(tmp_path):
    path = write_html(tmp_path / "report.html", empty_tables(), {})
    text = path.read_text(encoding="utf-8")
    assert text.count("no data") >= len(PLOTS)
    assert not IMG.search(text)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_html_copes_with_only_one_mode(tables):
    only_free = tables["results"][tables["results"]["mode"] == "free"]
    text = render_html({**tables, "results": only_free}, META)
    # lock-step plot and histograms: no data; index, fingerprints, separation, free: drawn.
    assert len(IMG.findall(text)) == 4 and text.count('class="nodata"') == 2


def test_html_small_multiples_for_many_implementations():
    rows = [
        {
            **result_row("ours.Adam", CASES[0], "lockstep", step, "param", step),
            "implementation": f"impl{i:02d}",
        }
        for i in range(12)
        for step in (1, 2)
    ]
    text = render_html({"results": frame(rows, RESULTS_COLUMNS)}, {})
    assert len(IMG.findall(text)) == 2  # lock-step plot and histograms


# --------------------------------------------------------------------------- junit


def test_junit_parses_and_counts(tables):
    root = ET.fromstring(junit_xml(tables["summary"]))
    suite = root.find("testsuite")
    assert suite is not None
    for el in (root, suite):
        assert el.attrib["tests"] == "6"
        assert el.attrib["failures"] == "1"
        assert el.attrib["errors"] == "1"
        assert el.attrib["skipped"] == "1"
    cases = suite.findall("testcase")
    # every case names the precision it ran in
    assert [(c.attrib["classname"], c.attrib["name"]) for c in cases] == sorted(
        (r["implementation"], f"{r['case']}[float32]") for r in make_summary()
    )


def test_junit_failure_error_and_skip_messages(tables):
    root = ET.fromstring(junit_xml(tables["summary"], suite_name="nightly"))
    assert root.find("testsuite").attrib["name"] == "nightly"
    failure = root.find(
        ".//testcase[@classname='torch.Adam'][@name='float32.tiny_grad[float32]']/failure"
    )
    message = failure.attrib["message"]
    for part in ("eps placement", "200", "paper.eps_hat", "eps inside | outside sqrt <b>"):
        assert part in message
    skipped = root.find(".//testcase[@classname='keras.Adam']/skipped")
    assert skipped.attrib["message"] == "keras not installed"
    error = root.find(".//testcase[@classname='keras.Adam']/error")
    # The terminal escape cannot appear in XML 1.0: replaced, and the file still parses.
    assert error.attrib["message"].startswith("RuntimeError: boom")
    assert "\x1b" not in error.attrib["message"]
    assert root.find(".//testcase[@classname='ours.Adam']/*") is None


def test_junit_is_deterministic(tables):
    shuffled = tables["summary"].sample(frac=1.0, random_state=3)
    assert junit_xml(shuffled) == junit_xml(tables["summary"])


def test_junit_of_nothing():
    root = ET.fromstring(junit_xml(frame([], SUMMARY_COLUMNS)))
    assert root.attrib["tests"] == "0" and root.find("testsuite") is not None


def test_junit_unknown_verdict_is_an_error_never_green():
    row = summary_row("ours.Adam", CASES[0], "maybe")
    root = ET.fromstring(junit_xml(frame([row], SUMMARY_COLUMNS)))
    error = root.find(".//testcase/error")
    assert error.attrib == {"message": "unknown verdict 'maybe'", "type": "unknown verdict 'maybe'"}
    assert root.attrib["errors"] == "1"


def test_junit_document_counts_by_outcome_and_orders_attributes_as_asked():
    cases = [
        JUnitCase("a", "one"),
        JUnitCase("a", "two", "failure", "over budget", "discrepancy", "body"),
        JUnitCase("b", "three", "skipped", "not installed"),
        JUnitCase("b", "four", "error", "boom\x1b[0m", "error"),
    ]
    root = ET.fromstring(junit_document(cases, "gate"))
    counts = [root.attrib[k] for k in ("tests", "failures", "errors", "skipped")]
    assert counts == ["4", "1", "1", "1"]
    assert [c.get("name") for c in root.iter("testcase")] == ["one", "two", "three", "four"]
    assert root.find(".//testcase[@name='two']/failure").text == "body"
    assert root.find(".//testcase[@name='three']/skipped").attrib == {"message": "not installed"}
    assert "\x1b" not in root.find(".//testcase[@name='four']/error").get("message")
    # only the attribute order differs: the gate's files have type first, run's message first
    plain, gate = junit_document(cases, "g"), junit_document(cases, "g", type_first=True)
    assert '<failure message="over budget" type="discrepancy">' in plain
    assert '<failure type="discrepancy" message="over budget">' in gate
    assert ET.canonicalize(plain) == ET.canonicalize(gate)
    with pytest.raises(ValueError, match="'fail' is unknown; allowed: passed, failure, error"):
        JUnitCase("a", "b", "fail")


def test_failed_row_case_is_named_as_the_caller_says_and_keeps_every_field():
    row = summary_row("torch.Adam", CASES[1], "discrepancy", category="eps placement", max_ulp=7)
    case = failed_row_case(row, "tiny_grad[float32]")
    assert (case.classname, case.name) == ("torch.Adam", "tiny_grad[float32]")
    assert (case.outcome, case.type) == ("failure", "discrepancy")
    assert case.message.startswith("category: eps placement; max_ulp: 7;")
    assert case.text.splitlines()[0] == "implementation: torch.Adam"
    assert len(case.text.splitlines()) == len(SUMMARY_COLUMNS)
    crash = failed_row_case(summary_row("keras.Adam", CASES[0], "error", detail="Boom"))
    assert (crash.outcome, crash.type, crash.message) == ("error", "error", "Boom")
    # the row's case and precision unless the caller names it
    assert crash.name == f"{CASES[0]}[float32]"


def test_xfail_and_stale_baseline_cases():
    row = summary_row("torch.Adam", CASES[1], "discrepancy")
    xfail = xfail_case(row, "n", "baselined (baseline[0]): known (https://x/1)")
    assert (xfail.classname, xfail.outcome, xfail.type) == ("torch.Adam", "skipped", "xfail")
    strict = stale_baseline_case("baseline[1] x", "stale", "https://x/2", strict=True)
    assert strict.classname == BASELINE_CLASSNAME == "adamspec.baseline"
    assert (strict.outcome, strict.type) == ("failure", "stale baseline")
    assert strict.text == "stale (https://x/2)"
    lax = stale_baseline_case("baseline[1] x", "stale", "", strict=False)
    assert (lax.outcome, lax.message, lax.type) == ("skipped", "stale (strict = false)", None)


def test_every_verdict_has_a_severity():
    assert set(VERDICTS) == set(VERDICT_SEVERITY)


def test_awkward_text_round_trips_through_csv(tmp_path):
    summary = make_summary()
    summary[0]["detail"] = 'comma, "quote"\nnewline\r\nCRLF ünïcode ≡ nan'
    summary[1]["detail"] = "nan"  # text, not a missing float
    write_tables(tmp_path, [], summary, [], [])
    back = read_tables(tmp_path)["summary"].set_index(["implementation", "case"])
    assert back.loc[("ours.Adam", CASES[0]), "detail"] == summary[0]["detail"]
    assert back.loc[("ours.Adam", CASES[1]), "detail"] == "nan"


def test_html_leaves_no_figure_alive(tables):
    import gc

    from matplotlib.figure import Figure

    def live() -> int:
        gc.collect()
        return sum(isinstance(o, Figure) for o in gc.get_objects())

    before = live()
    render_html(tables, META)
    assert live() == before
    # Built without pyplot: nothing registered in its global figure manager either.
    import sys

    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_heatmaps_leave_room_for_long_variant_names():
    import warnings

    from adamspec.reports.html import plot_fingerprints, plot_separation

    # Catalog names reach 40 characters; too small a figure collapses the axes (a warning).
    variants = [f"optax.amsgrad[bias_correction_nu=False]{i:02d}" for i in range(26)]
    fp = [
        {"implementation": impl, "dtype": "float32", "precision": "float32", "variant": v,
         "rank": j + 1, "max_ulp": j, "param_max_ulp": j,
         "cases": 1, "documented": j == 0, "within_budget": j == 0, "formula": v,
         "within_cases": int(j == 0), "failing_cases": "" if j == 0 else "c"}
        for impl in ("adamspec[paper.algorithm1]", "torch.Adam(fused=True)")
        for j, v in enumerate(variants)
    ]  # fmt: skip
    sep = [
        {"variant_a": a, "variant_b": b, "max_ulp": 3, "component": "param", "case": "c",
         "relation": "separated"}
        for i, a in enumerate(variants)
        for b in variants[i + 1 :]
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert IMG.search(plot_fingerprints(frame(fp, FINGERPRINT_COLUMNS)))
        assert IMG.search(plot_separation(frame(sep, SEPARATION_COLUMNS)))


# --------------------------------------------------------------------------- first screen


def tier_rows(*pairs: tuple[str, str]) -> list[dict]:
    return [{"verdict": v, "category": c} for v, c in pairs]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (tier_rows(("pass", "rounding only"), ("skipped", "")), tiers.CONFORMS),
        (tier_rows(("pass", ""), ("discrepancy", "format range")), tiers.CONFORMS_EXCEPT_RANGE),
        (tier_rows(("discrepancy", "format range"), ("discrepancy", "eps placement")),
         tiers.DOES_NOT_CONFORM),
        (tier_rows(("discrepancy", "unexplained"), ("error", "")), tiers.DOES_NOT_CONFORM),
        (tier_rows(("discrepancy", "format range"), ("error", "")), tiers.ERROR),
        (tier_rows(("skipped", ""), ("skipped", "")), tiers.SKIPPED),
        (tier_rows(), tiers.SKIPPED),
    ],
)  # fmt: skip
def test_tier_of_an_implementation(rows, expected):
    assert tiers.tier(rows) == expected


def test_tiers_read_the_category_the_classifier_writes():
    from adamspec.harness.classify import FORMAT_RANGE as CLASSIFIED

    assert tiers.FORMAT_RANGE == CLASSIFIED


def test_markdown_first_section_lists_tiers_groups_and_findings(tables):
    md = summary_markdown(tables["summary"], tables["fingerprints"], META)
    first = md.split("| implementation |")[0]  # everything before the first table
    assert "**3 implementations:** 1 does not conform ✗ · 1 error ! · 1 conforms ✓" in first
    assert "- **paper.algorithm1**: ours.Adam ✓" in first
    # torch.Adam's best fingerprint (paper.eps_hat, 1 ULP) is not within budget
    assert "- **no catalog formula within budget**: torch.Adam ✗ (closest: paper.eps_hat)" in first
    assert "- **not fingerprinted**: keras.Adam !" in first
    assert (
        "- torch.Adam: does not conform on float32.tiny_grad (eps placement; param 200 ULP) "
        "(case float32.tiny_grad)" in first
    )
    assert "- keras.Adam: crashed on float32.tiny_grad: RuntimeError: boom" in first


def test_html_opens_with_tiers_findings_and_groups_and_ends_with_the_run(page):
    at = {name: page.index(f'id="{name}"') for name in
          ("findings", "formulas", "off-budget", "summary", "free", "run")}  # fmt: skip
    assert list(at) == sorted(at, key=at.get)
    lead = page[page.index("<h1>") : at["findings"]]
    assert "3 implementations on 2 problems in precision <b>float32</b>" in lead
    assert "1 does not conform" in lead and "1 conforms" in lead and "1 error" in lead
    groups = page[at["formulas"] : at["off-budget"]]
    assert "paper.algorithm1" in groups and "ours.Adam ✓" in groups
    findings = page[at["findings"] : at["formulas"]]
    anchor = case_anchor("torch.Adam", "float32.tiny_grad")
    assert f'href="#{anchor}"' in findings and f'id="{anchor}"' in page
    run = page[at["run"] :]
    assert "<dt>host</dt><dd>ci</dd>" in run and "<dt>seed</dt><dd>1234</dd>" in run


def test_html_metadata_is_text_not_python_reprs():
    meta = {"implementations": [f"impl{i}" for i in range(3)], "budget_ulp": {"param": 2}}
    page = render_html({}, meta)
    assert "impl0, impl1, impl2" in page and "param=2" in page
    assert "[&#x27;" not in page and "{&#x27;" not in page


def test_long_cells_are_cut_with_the_full_text_on_hover(tables):
    long = "x" * 300
    summary = tables["summary"].copy()
    summary.loc[0, "detail"] = long
    page = render_html({**tables, "summary": summary}, META)
    assert f'title="{long}"' in page
    assert "table-layout: fixed" in page and "text-overflow: ellipsis" in page


# ------------------------------------------------------------------------- tiers


def _range_rows() -> list[dict]:
    overflow = "g*g overflows at 38 of 60 coordinate-steps"
    return [
        summary_row("torch.Adam", CASES[0], "pass"),
        summary_row("torch.Adam", CASES[1], "range", category="format range", detail=overflow),
    ]


@pytest.mark.parametrize(
    ("verdicts", "expected", "shown"),
    [
        (["pass", "pass"], "conforms", "pass"),
        (["pass", "range"], "conforms except the dtype's range", "pass (range: 1 case)"),
        (["range", "range"], "conforms except the dtype's range", "pass (range: 2 cases)"),
        (["range", "discrepancy"], "does not conform", "discrepancy"),
        (["range", "error"], "error", "error"),
        (["skipped", "skipped"], "skipped", "skipped"),
        (["skipped", "pass"], "conforms", "pass"),
    ],
)
def test_tier_of_an_implementation_from_its_verdicts(verdicts, expected, shown):
    from adamspec.reports.tiers import tier, tier_text

    rows = [summary_row("torch.Adam", c, v, category="format range" if v == "range" else "")
            for c, v in zip(CASES, verdicts, strict=True)]  # fmt: skip
    assert tier(rows) == expected and tier_text(rows) == shown


def test_a_format_range_discrepancy_of_older_records_is_a_range_case():
    from adamspec.reports.tiers import tier

    old = summary_row("torch.Adam", CASES[1], "discrepancy", category="format range")
    assert (
        tier([summary_row("torch.Adam", CASES[0], "pass"), old])
        == "conforms except the dtype's range"
    )


def test_the_main_tables_show_the_range_tier_and_junit_passes_it_saying_what_overflowed():
    rows = _range_rows()
    md = summary_markdown(frame(rows, SUMMARY_COLUMNS), frame([], FINGERPRINT_COLUMNS), META)
    (row,) = [line for line in md.splitlines() if line.startswith("| torch.Adam")]
    assert row.rstrip().endswith("| pass (range: 1 case) |")
    page = render_html({"summary": frame(rows, SUMMARY_COLUMNS)}, META)
    assert "pass (range: 1 case)" in page
    root = ET.fromstring(junit_xml(frame(rows, SUMMARY_COLUMNS)))
    assert root.attrib["failures"] == "0"
    (case,) = [c for c in root.iter("testcase") if c.get("name") == f"{CASES[1]}[float32]"]
    assert case.find("system-out").text == "range: g*g overflows at 38 of 60 coordinate-steps"
    strict = ET.fromstring(junit_xml(frame(rows, SUMMARY_COLUMNS), range_fails=True))
    (case,) = [c for c in strict.iter("testcase") if c.get("name") == f"{CASES[1]}[float32]"]
    assert case.find("failure").get("type") == "range" and strict.attrib["failures"] == "1"


def test_a_report_folder_written_before_the_index_profile_reads_back(tmp_path, tables):
    write_tables(tmp_path, **tables)
    (tmp_path / "index_profile.csv").unlink()
    back = read_tables(tmp_path)
    assert back["profiles"].empty and list(back["profiles"].columns) == list(PROFILE_COLUMNS)


def test_the_failing_cases_table_says_where_the_coordinates_fail(tables):
    from adamspec.reports.html import plot_index

    where = "12 of 1024 coordinates fail: first at index 512; from index 512 on"
    found = {"localization": where, "failing_coordinates": 12, "first_failing_index": 512}
    rows = [summary_row("torch.Adam", CASES[1], "discrepancy", category="index-dependent",
                        **found)]  # fmt: skip
    page = render_html({"summary": frame(rows, SUMMARY_COLUMNS), "profiles": tables["profiles"]},
                       META)  # fmt: skip
    assert where in page and 'id="index"' in page
    assert IMG.search(plot_index(tables["profiles"]))
    assert plot_index(frame([], PROFILE_COLUMNS)) == '<p class="nodata">no data</p>'

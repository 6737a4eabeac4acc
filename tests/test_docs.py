"""The README's measured figures come from the records the tools write, not from prose."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main_job_tool():
    spec = importlib.util.spec_from_file_location("main_job", os.path.join(ROOT, "tools", "main_job.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_main_job_table_is_the_one_its_records_give():
    tool = _main_job_tool()
    records = tool.read_records()
    assert records, "tools/main_job_results.md holds no run: python tools/main_job.py --record"
    assert tool.readme_block() == tool.render_table(records), \
        "README.md's main-job table differs from tools/main_job_results.md: python tools/main_job.py --update-readme"


def test_main_job_table_gives_ranges_per_cpu_kind_engine_and_precision(tmp_path):
    tool = _main_job_tool()
    row = dict(zip(tool.COLUMNS, ["2026-01-01", "abc1234", "AMD EPYC", "AVX2-only", "detectron2", "FP32", "2",
                                  "0.950", "301", "43.6", "65.3", "51.0"]))
    records = [row, {**row, "s/it": "1.020", "wall s": "318", "AP": "42.0", "AP50": "65.3", "AP75": "49.9"},
               {**row, "CPU kind": "AVX-512 + native bf16", "precision": "bf16 autocast", "s/it": "0.283",
                "wall s": "95", "AP": "42.7", "AP50": "63.4", "AP75": "49.5"}]
    path = tmp_path / "results.md"
    for r in records:
        tool.append_record(r, str(path))
    assert tool.read_records(str(path)) == records  # what is appended reads back, header and all
    lines = tool.render_table(records).splitlines()
    assert lines[2] == "| AVX2-only | detectron2 | FP32 | 2 | 0.95–1.02 | 5 min 01 s–5 min 18 s | 42.0–43.6 | 65.3 | 49.9–51.0 |"
    assert lines[3] == "| AVX-512 + native bf16 | detectron2 | bf16 autocast | 1 | 0.28 | 1 min 35 s | 42.7 | 63.4 | 49.5 |"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{tool.BEGIN}\nold table\n{tool.END}\nrest\n")
    tool.update_readme(records, str(readme))
    assert tool.readme_block(str(readme)) == tool.render_table(records)
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("\nrest\n")


FIGURES = "<!-- figures: "


def _numbers(text: str):
    """Every number written in ``text`` outside code spans (config names, keys, commands), as written."""
    import re

    text = re.sub(r"`[^`]*`", " ", text)
    return re.findall(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])", text)


def _roundings(text: str):
    """Every number in a record, as written and rounded to 0, 1 and 2 decimals (a README may round)."""
    out = set()
    for n in _numbers(text):
        out.add(n)
        try:
            value = float(n.replace(",", ""))
        except ValueError:
            continue
        for digits in (0, 1, 2):
            out.add(f"{value:.{digits}f}")
            out.add(f"{value:,.{digits}f}")
    return out


def test_readme_figures_are_in_the_records_they_cite():
    """Each README paragraph or table after a ``<!-- figures: FILE -->`` line (up to the next blank line) takes
    its measured figures from FILE, a record a tool writes or the notes beside the configs: every number in
    it (outside code) must appear in FILE, as written or rounded. A figure typed from memory, or left behind
    when the record changed, fails here."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    blocks = readme.split(FIGURES)[1:]
    assert len(blocks) >= 4, "README.md lost its <!-- figures: FILE --> markers"
    missing = []
    for block in blocks:
        source, rest = block.split(" -->", 1)
        paragraph = rest.lstrip("\n").split("\n\n", 1)[0]
        with open(os.path.join(ROOT, source)) as f:
            known = _roundings(f.read())
        missing += [(source, n) for n in _numbers(paragraph) if n not in known]
    assert not missing, f"README figures in no record they cite: {missing}"

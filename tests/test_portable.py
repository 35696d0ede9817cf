"""A fresh clone runs anywhere: no test, benchmark, config or Slurm script names one machine's absolute path."""

import re
from pathlib import Path

from megatron_grpo.config import load_config

REPO = Path(__file__).parents[1]
SCANNED = ("tests", "bench", "configs", "slurm")
SUFFIXES = {".py", ".yaml", ".yml", ".json", ".sh", ".sbatch", ".md", ".jsonl", ".txt"}
# an absolute path of two or more parts, not inside a longer path, URL or variable expansion
ABSOLUTE = re.compile(r"(?<![\w.~$}/:-])/[A-Za-z_][\w.-]*(?:/[\w.-]+)+")
# the system's own paths, scratch space, and names that are meant not to exist
ALLOWED = ("/tmp/", "/dev/", "/proc/", "/bin/", "/usr/bin/", "/usr/sbin/", "/etc/hosts", "/path/to/",
           "/nonexistent/")


def machine_paths(text: str) -> list[str]:
    """Absolute paths in ``text`` outside comments that are not allowed; shell/YAML comments may show examples."""
    found = []
    for line in text.splitlines():
        code = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        found += [p for p in ABSOLUTE.findall(code) if not (p + "/").startswith(ALLOWED)]
    return found


def test_the_check_finds_machine_paths():
    assert machine_paths('DATA = "/work/shared/data/eval"\nx = Path("/home/me/tok")  # a comment /mnt/a/b') == [
        "/work/shared/data/eval", "/home/me/tok"]
    yaml = "  tokenizer: /scratch/u/qwen3   # yaml\n# example: /models/Qwen3-4B-Base"
    assert machine_paths(yaml) == ["/scratch/u/qwen3"]
    assert machine_paths('p = tmp_path / "a/b"; u = "https://x.org/a/b"; d = "/tmp/x/y"; s = "$HOME/a/b"') == []


def test_no_machine_path_under_tests_bench_configs_or_slurm():
    offenders = [f"{path.relative_to(REPO)}: {p}" for top in SCANNED for path in sorted((REPO / top).rglob("*"))
                 if path.suffix in SUFFIXES and path.is_file() and path != Path(__file__)
                 for p in machine_paths(path.read_text(encoding="utf-8", errors="replace"))]
    assert offenders == []


def test_every_config_path_stays_inside_the_repo():
    """A config that reaches beside the clone (the old ../../shared) cannot start from a fresh one."""
    outside = []
    for path in sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "megatron_grpo" / "assets").glob("*.yaml")):
        cfg = load_config(path)
        named = [cfg.model.hf_config, cfg.model.tokenizer, cfg.model.hf_checkpoint, *cfg.data.train_files,
                 *(s.path for s in cfg.eval.sets)]
        outside += [f"{path.name}: {p}" for p in named if p and not Path(p).resolve().is_relative_to(REPO)]
    assert outside == []

"""The Python package against independent references: the tiny models' expected logits, the CLI's greedy text
(`rwkv-lite generate` and `rwkv-lite chat`), the C API's own defaults (struct layouts), and an install with pip.

Environment (set by ctest `python_package`): RWKVL_LIBRARY (librwkvlite.so), RWKVL_CLI (rwkv-lite),
RWKVL_SHARED_DIR (reference data), RWKVL_TOKENIZER_DIR."""
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rwkv_lite  # noqa: E402
from rwkv_lite import _capi  # noqa: E402

SHARED = os.environ.get("RWKVL_SHARED_DIR", os.path.join(HERE, "..", "..", "..", "..", "shared"))
CLI = os.environ.get("RWKVL_CLI", "rwkv-lite")
TINY = os.path.join(SHARED, "reference", "tiny-rwkv")
REF = os.path.join(SHARED, "reference", "models", "rwkv5-world-l8-d256", "model.pth")


def need(path):
    if not os.path.exists(path):
        if os.environ.get("RWKVL_ALLOW_NO_SHARED") == "1":
            pytest.skip(f"missing {path}")
        pytest.fail(f"reference data missing: {path}")
    return path


def cli(*args, stdin=None):
    r = subprocess.run([CLI, *args], input=stdin, capture_output=True, check=True)
    return r.stdout


def test_structs_mirror_the_header():
    lib = _capi.lib
    s = lib.rwkvl_session_default_params()
    assert (s.ffn.mode, s.ffn.seed) == (0, 1)
    assert (s.head.p, s.head.min_clusters, s.head.max_clusters) == (0.95, 3, 100)
    assert (s.memory.budget_bytes, s.memory.prefetch) == (0, 1)
    g = lib.rwkvl_generate_default_params()
    assert (g.max_tokens, g.stop_at_eos, g.feed_last, g.n_stop) == (128, 1, 1, 0)
    assert (g.sampling.temperature, g.sampling.top_p, g.sampling.penalty_decay) == (1.0, 1.0, 1.0)
    assert rwkv_lite.api_version() >= (1, 5)


@pytest.mark.parametrize("version", ["5v2-730K", "7v0-834K"])
def test_logits_equal_the_expected_logits(version):
    m = rwkv_lite.Model(need(os.path.join(TINY, f"tiny-rwkv-{version}-FP32.bin")), threads=1)
    raw = open(need(os.path.join(TINY, f"expected-logits-{version}.bin")), "rb").read()
    want = struct.unpack(f"<{len(raw) // 4}f", raw)
    got = m.logits([34, 105, 110])  # the bytes '"in', the prompt of the expected logits
    assert len(got) == len(want) == m.info["n_vocab"] == 256
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-5
    every = m.logits([34, 105, 110], all_logits=True)
    assert max(abs(a - b) for a, b in zip(every[-1], want)) < 1e-5


def test_greedy_text_equals_the_cli():
    path = need(os.path.join(TINY, "tiny-rwkv-5v2-730K-FP32.bin"))
    m = rwkv_lite.Model(path, threads=2)
    want = cli("generate", "-m", path, "-p", "The quick brown fox", "-n", "40", "--temp", "0", "-t", "2")
    pieces = list(m.generate("The quick brown fox", max_tokens=40, temperature=0))
    assert "".join(pieces).encode(errors="surrogateescape") == want or "".join(pieces) == want.decode(errors="replace")
    assert m.last_result["generated"] == 40 and m.last_result["finish_reason"] == "length"


def test_world_model_tokenize_chat_and_generate_equal_the_cli():
    path = need(REF)
    m = rwkv_lite.Model(path, threads=2)
    assert m.tokenizer_name == "world"
    ids = m.tokenize("The capital of France is Paris. 中文")
    assert m.detokenize(ids) == "The capital of France is Paris. 中文"
    want = cli("generate", "-m", path, "-p", "The capital of France is", "-n", "24", "--temp", "0", "-t", "2")
    assert "".join(m.generate("The capital of France is", max_tokens=24, temperature=0)) == want.decode()
    q = "What is the capital of France?"
    want_chat = cli("chat", "-m", path, "--temp", "0", "--presence-penalty", "0", "--frequency-penalty", "0",
                    "-t", "2", stdin=(q + "\n").encode()).decode().strip()
    got = "".join(m.chat([{"role": "user", "content": q}], temperature=0, presence_penalty=0, frequency_penalty=0))
    assert got == want_chat


def test_states_save_load_copy():
    path = need(os.path.join(TINY, "tiny-rwkv-6v0-1m-FP32.bin"))
    m = rwkv_lite.Model(path, threads=1)
    s = m.state()
    list(m.generate("Once upon a time", max_tokens=5, temperature=0, state=s))
    c = s.copy()
    a = "".join(m.generate(" and", max_tokens=20, temperature=0, state=s))
    b = "".join(m.generate(" and", max_tokens=20, temperature=0, state=c))
    assert a == b
    f = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"rwkvl-py-{os.getpid()}.state")
    s.save(f)
    t = m.state()
    t.load(f)
    os.unlink(f)
    assert list(t.values) == list(s.values)
    t.reset()
    assert list(t.values) != list(s.values)


def test_errors_and_early_stop():
    with pytest.raises(rwkv_lite.Error) as e:
        rwkv_lite.Model("/nonexistent/model.bin")
    assert e.value.status == "I/O error"
    m = rwkv_lite.Model(need(os.path.join(TINY, "tiny-rwkv-4v0-660K-FP32.bin")), threads=1)
    with pytest.raises(rwkv_lite.Error) as e:
        m.logits([1, 999])
    assert e.value.status == "invalid argument" and "999" in str(e.value)
    it = m.generate("abc", max_tokens=100000, temperature=0)
    first = next(it)
    it.close()  # stops the generation thread
    assert first


def test_pip_install(tmp_path):
    # From a copy of the package: setuptools writes build/ and *.egg-info beside the sources it builds, which must
    # not land in the checkout. The library comes from $RWKVL_LIBRARY (setup.py).
    import shutil
    src = tmp_path / "src"
    shutil.copytree(os.path.dirname(HERE), src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
                        "--target", str(target), str(src)],
                       capture_output=True, text=True,
                       env={**os.environ, "PIP_NO_INPUT": "1", "RWKVL_LIBRARY": os.path.abspath(_capi.library_path)})
    if r.returncode != 0 and "No module named pip" in r.stderr:
        pytest.skip("pip is not installed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "rwkv_lite" / "librwkvlite.so").exists()
    env = {k: v for k, v in os.environ.items() if k != "RWKVL_LIBRARY"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", "import rwkv_lite; print(rwkv_lite.library_path)"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip().startswith(str(target))


def test_compress_and_evaluate_equal_the_cli(tmp_path):
    """int8 quantisation through the package and through `rwkv-lite compress` give the same file bytes; the
    perplexity the package measures equals `rwkv-lite perplexity --json` on that file."""
    import json
    path = need(REF)
    text = need(os.path.join(SHARED, "data", "wikitext2-test.txt"))
    out_py, out_cli = tmp_path / "py.rwkvl", tmp_path / "cli.rwkvl"
    rep = rwkv_lite.compress(path, out_py, quant="int8", threads=2)
    assert rep["out_file_bytes"] == os.path.getsize(out_py) > 0
    cli("compress", "-m", path, "-o", str(out_cli), "--quant", "int8", "-t", "2")
    assert open(out_py, "rb").read() == open(out_cli, "rb").read()
    m = rwkv_lite.Model(str(out_py), threads=2)
    got = m.evaluate(text=text, max_tokens=2000)
    want = json.loads(cli("perplexity", "-m", str(out_py), "-f", text, "--max-tokens", "2000", "--json", "-t", "2"))
    assert got["text_predicted"] == 1999
    assert abs(got["text_ppl"] - want["ppl"]) <= 1e-9 * want["ppl"], (got["text_ppl"], want["ppl"])
    with pytest.raises(rwkv_lite.Error):
        rwkv_lite.compress(path, tmp_path / "x.rwkvl", quant="int3")
    lam = need(os.path.join(SHARED, "data", "lambada_openai_test.jsonl"))
    got = rwkv_lite.Model(path, threads=2).evaluate(lambada=lam, max_passages=40)
    want = json.loads(cli("eval", "-m", path, "--lambada", lam, "--lambada-max", "40", "--json", "-t", "2"))
    assert got["lambada_n"] == want["lambada_n"] == 40
    assert got["lambada_target_tokens"] == want["lambada_target_tokens"]
    assert abs(got["lambada_ppl"] - want["lambada_ppl"]) <= 1e-9 * want["lambada_ppl"]

"""rwkv-lite from Python: a ctypes binding of the C API (include/rwkv_lite.h).

    import rwkv_lite
    model = rwkv_lite.Model("model.pth")              # any format the runtime reads, recognised by content
    ids = model.tokenize("The capital of France is")
    logits = model.logits(ids)                        # NumPy float32 array where NumPy is present, else a list
    for piece in model.generate("The capital of France is", max_tokens=32, temperature=0):
        print(piece, end="", flush=True)
    state = model.state()                             # recurrent state: save / load / copy / reset
    reply = "".join(model.chat([{"role": "user", "content": "Hi!"}], temperature=0))

Every failure of the library raises rwkv_lite.Error (its `status` names the kind, its message is the library's).
"""
import ctypes
import queue
import threading

from . import _capi
from ._capi import lib

try:  # NumPy arrays in and out where NumPy is present
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None

__all__ = ["Error", "Model", "Session", "State", "api_version", "compress", "system_info", "library_path"]

library_path = _capi.library_path


class Error(RuntimeError):
    """A failed library call: status is the C status name ("invalid argument", "I/O error", ...)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _check(st):
    if st != 0:
        raise Error(lib.rwkvl_status_name(st).decode(), lib.rwkvl_last_error().decode(errors="replace"))


def api_version():
    """(major, minor) of the loaded library's C API."""
    v = lib.rwkvl_api_version()
    return v // 1000, v % 1000


def system_info():
    return lib.rwkvl_system_info().decode()


if api_version()[0] != _capi.API_MAJOR or api_version()[1] < _capi.API_MINOR:
    raise ImportError(f"{library_path} implements C API {api_version()}, this package needs "
                      f"{_capi.API_MAJOR}.{_capi.API_MINOR} or later")


def _tokens_array(tokens):
    if _np is not None and isinstance(tokens, _np.ndarray):
        tokens = tokens.astype(_np.int32, copy=False).tolist()
    tokens = list(tokens)
    return (ctypes.c_int32 * len(tokens))(*tokens), len(tokens)


def _floats(buf, n):
    if _np is not None:
        return _np.ctypeslib.as_array(buf, shape=(n,)).copy()
    return list(buf)


class State:
    """A recurrent state of a model (the whole context of an RWKV model)."""

    def __init__(self, model):
        self._model = model
        h = ctypes.c_void_p()
        _check(lib.rwkvl_state_new(model._h, ctypes.byref(h)))
        self._h = h

    def __del__(self):
        if getattr(self, "_h", None):
            lib.rwkvl_state_free(self._h)
            self._h = None

    def reset(self):
        _check(lib.rwkvl_state_reset(self._h))

    def copy(self):
        """A new state with the same values."""
        s = State(self._model)
        _check(lib.rwkvl_state_copy(s._h, self._h))
        return s

    def copy_from(self, other):
        _check(lib.rwkvl_state_copy(self._h, other._h))

    def save(self, path):
        """Writes the state file (atomically; tied to the model's shape, with a checksum)."""
        _check(lib.rwkvl_state_save(self._h, str(path).encode()))

    def load(self, path):
        _check(lib.rwkvl_state_load(self._h, str(path).encode()))

    @property
    def values(self):
        """The raw float32 values (a NumPy view that writes through, or a list copy without NumPy)."""
        n = self._model.info["state_floats"]
        ptr = lib.rwkvl_state_data(self._h)
        if _np is not None:
            return _np.ctypeslib.as_array(ptr, shape=(n,))
        return [ptr[i] for i in range(n)]


class Session:
    """Scratch, threads, caches and memory plan for evaluating with a model (rwkvl_session)."""

    def __init__(self, model, threads=0, mem_budget=None, chunk=0):
        self._model = model
        p = lib.rwkvl_session_default_params()
        p.n_threads = int(threads)
        if mem_budget:
            p.memory.budget_bytes = int(mem_budget)
            p.memory.max_chunk = int(chunk) if chunk else 8
        h = ctypes.c_void_p()
        _check(lib.rwkvl_session_new(model._h, ctypes.byref(p), ctypes.byref(h)))
        self._h = h
        self.chunk = int(chunk)

    def __del__(self):
        if getattr(self, "_h", None):
            lib.rwkvl_session_free(self._h)
            self._h = None

    def eval(self, tokens, state, all_logits=False):
        """Feeds tokens into `state`; returns the logits after the last token (n_vocab floats), or after every
        token (n x n_vocab) with all_logits."""
        arr, n = _tokens_array(tokens)
        V = self._model.info["n_vocab"]
        if all_logits:
            out = (ctypes.c_float * (n * V))()
            _check(lib.rwkvl_eval_all_logits(self._h, state._h, arr, n, self.chunk, out))
            flat = _floats(out, n * V)
            return flat.reshape(n, V) if _np is not None else [flat[i * V:(i + 1) * V] for i in range(n)]
        out = (ctypes.c_float * V)()
        _check(lib.rwkvl_eval(self._h, state._h, arr, n, self.chunk, out))
        return _floats(out, V)


_ROLES = {"system": 0, "developer": 0, "user": 1, "assistant": 2}


class Model:
    """A loaded model (any format: rwkv.cpp .bin, PyTorch .pth, safetensors, native rwkv-lite)."""

    def __init__(self, path, weight_dtype=None, tokenizer=None, threads=0, mem_budget=None):
        p = lib.rwkvl_model_default_params()
        if weight_dtype:
            p.weight_dtype = weight_dtype.encode()
        h = ctypes.c_void_p()
        _check(lib.rwkvl_model_load(str(path).encode(), ctypes.byref(p), ctypes.byref(h)))
        self._h = h
        self.path = str(path)
        info = _capi.ModelInfo()
        _check(lib.rwkvl_model_get_info(self._h, ctypes.byref(info)))
        self.info = {name: (getattr(info, name).decode() if isinstance(getattr(info, name), bytes) else getattr(info, name))
                     for name, _ in info._fields_}
        t = ctypes.c_void_p()
        _check(lib.rwkvl_tokenizer_for_model(self._h, self.path.encode(), tokenizer.encode() if tokenizer else None,
                                             ctypes.byref(t)))
        self._tok = t
        self.session = Session(self, threads=threads, mem_budget=mem_budget)

    def __del__(self):
        if getattr(self, "session", None) is not None:
            self.session = None
        if getattr(self, "_tok", None):
            lib.rwkvl_tokenizer_free(self._tok)
            self._tok = None
        if getattr(self, "_h", None):
            lib.rwkvl_model_free(self._h)
            self._h = None

    @property
    def tokenizer_name(self):
        return lib.rwkvl_tokenizer_name(self._tok).decode()

    def tokenize(self, text):
        data = text.encode() if isinstance(text, str) else bytes(text)
        cap = len(data) + 8
        out = (ctypes.c_int32 * cap)()
        n = ctypes.c_size_t()
        _check(lib.rwkvl_tokenize(self._tok, data, len(data), out, cap, ctypes.byref(n)))
        return list(out[:n.value])

    def token_bytes(self, token):
        buf = ctypes.create_string_buffer(256)
        n = ctypes.c_size_t()
        _check(lib.rwkvl_token_bytes(self._tok, int(token), buf, 256, ctypes.byref(n)))
        return buf.raw[:n.value]

    def detokenize(self, tokens):
        if _np is not None and isinstance(tokens, _np.ndarray):
            tokens = tokens.tolist()
        return b"".join(self.token_bytes(t) for t in tokens).decode(errors="replace")

    def state(self):
        return State(self)

    def logits(self, tokens, state=None, all_logits=False):
        """Logits after feeding tokens (from a fresh state, or into `state`)."""
        return self.session.eval(tokens, state if state is not None else State(self), all_logits=all_logits)

    def chat_tokens(self, messages, add_generation_prompt=True):
        """Tokens of a conversation in the RWKV World chat format, and where each message ends."""
        msgs = (_capi.ChatMessage * len(messages))()
        keep = []
        for i, m in enumerate(messages):
            if m["role"] not in _ROLES:
                raise Error("invalid argument", f"unknown chat role {m['role']!r}")
            keep.append(str(m.get("content", "")).encode())
            msgs[i].role = _ROLES[m["role"]]
            msgs[i].content = keep[-1]
        cap = sum(len(k) for k in keep) + 16 * (len(messages) + 1)
        out = (ctypes.c_int32 * cap)()
        bounds = (ctypes.c_size_t * max(1, len(messages)))()
        n = ctypes.c_size_t()
        _check(lib.rwkvl_chat_tokenize(self._tok, msgs, len(messages), 1 if add_generation_prompt else 0, out, cap,
                                       ctypes.byref(n), bounds))
        return list(out[:n.value]), list(bounds[:len(messages)])

    def generate(self, prompt, max_tokens=128, temperature=1.0, top_k=0, top_p=1.0, presence_penalty=0.0,
                 frequency_penalty=0.0, penalty_decay=1.0, seed=0, stop=(), state=None, stop_at_eos=None, ban_eos=False):
        """An iterator of text pieces (never half a UTF-8 character nor any part of a stop sequence). prompt: text
        or token ids. With `state`, the prompt continues it and the state is updated; else a fresh one is used."""
        ids = self.tokenize(prompt) if isinstance(prompt, (str, bytes)) else list(prompt)
        g = lib.rwkvl_generate_default_params()
        g.max_tokens = int(max_tokens)
        g.sampling.temperature, g.sampling.top_k, g.sampling.top_p = float(temperature), int(top_k), float(top_p)
        g.sampling.presence_penalty, g.sampling.frequency_penalty = float(presence_penalty), float(frequency_penalty)
        g.sampling.penalty_decay, g.sampling.seed = float(penalty_decay), int(seed)
        stops = [s.encode() for s in stop]
        stop_arr = (ctypes.c_char_p * max(1, len(stops)))(*stops)
        g.stop, g.n_stop = stop_arr, len(stops)
        g.stop_at_eos = int(self.tokenizer_name != "byte" if stop_at_eos is None else stop_at_eos)
        g.ban_eos = int(ban_eos)
        return self._run(ids, g, state if state is not None else State(self), stop_arr)

    def chat(self, messages, max_tokens=500, temperature=1.0, top_p=0.3, presence_penalty=0.5, frequency_penalty=0.5,
             penalty_decay=0.996, seed=0, state=None):
        """The assistant's reply to a conversation (list of {"role", "content"}), as an iterator of text pieces, with
        RWKV's chat sampling defaults; the reply ends at an empty line."""
        ids, _ = self.chat_tokens(messages, True)
        pieces = self.generate(ids, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                               presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                               penalty_decay=penalty_decay, seed=seed, stop=["\n\n"], state=state, stop_at_eos=False,
                               ban_eos=True)
        at_start = True
        for p in pieces:
            if at_start:
                p = p.lstrip(" \t\n")
                if not p:
                    continue
                at_start = False
            yield p

    def evaluate(self, text=None, lambada=None, max_tokens=0, max_passages=0):
        """Perplexity and bits per byte of a text file, and/or LAMBADA accuracy and perplexity of a jsonl file
        (lm-eval's lambada_openai protocol), as `rwkv-lite eval` computes them. Returns a dict."""
        out = {}
        if text is not None:
            h = ctypes.c_void_p()
            _check(lib.rwkvl_text_tokens_open(self._tok, str(text).encode(), int(max_tokens), ctypes.byref(h)))
            try:
                r = _capi.TextResult()
                _check(lib.rwkvl_eval_text(self.session._h, h, None, ctypes.byref(r)))
            finally:
                lib.rwkvl_text_tokens_free(h)
            out.update({f"text_{k}": getattr(r, k) for k, _ in r._fields_})
        if lambada is not None:
            h = ctypes.c_void_p()
            _check(lib.rwkvl_lambada_open(str(lambada).encode(), int(max_passages), ctypes.byref(h)))
            try:
                _check(lib.rwkvl_lambada_tokenize(h, self._tok))
                buf = ctypes.create_string_buffer(_capi.LAMBADA_RESULT_BYTES)
                _check(lib.rwkvl_eval_lambada(self.session._h, h, None, None, buf))
                r = _capi.LambadaResultHead.from_buffer_copy(buf.raw[:ctypes.sizeof(_capi.LambadaResultHead)])
            finally:
                lib.rwkvl_lambada_free(h)
            out.update({f"lambada_{k}": getattr(r, k) for k, _ in r._fields_})
        return out

    def _run(self, ids, g, state, keep_alive):
        """Runs rwkvl_generate on a thread; yields its pieces. Closing the iterator stops the generation."""
        arr, n = _tokens_array(ids)
        q = queue.Queue(maxsize=64)
        stop = threading.Event()
        done = object()
        pending = bytearray()

        def on_piece(_user, piece):
            if stop.is_set():
                return 1
            text = ctypes.string_at(piece.contents.text, piece.contents.text_len) if piece.contents.text_len else b""
            q.put(text)
            return 0

        cb = _capi.PIECE_FN(on_piece)
        result = _capi.GenerateResult()
        error = []

        def run():
            st = lib.rwkvl_generate(self.session._h, state._h, self._tok, arr, n, ctypes.byref(g), cb, None,
                                    ctypes.byref(result))
            if st != 0:
                error.append(Error(lib.rwkvl_status_name(st).decode(), lib.rwkvl_last_error().decode(errors="replace")))
            q.put(done)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                pending.extend(item)
                # Pieces end on character boundaries (invalid bytes pass through: decoded with replacement).
                text = pending.decode(errors="replace")
                pending.clear()
                if text:
                    yield text
        finally:
            stop.set()
            while t.is_alive():
                try:
                    q.get(timeout=0.05)
                except queue.Empty:
                    pass
            t.join()
            del keep_alive, cb
        if error:
            raise error[0]
        self.last_result = {
            "finish_reason": lib.rwkvl_finish_reason_name(result.finish).decode(),
            "prompt_tokens": result.prompt_tokens, "cached_tokens": result.cached_tokens,
            "generated": result.generated, "prompt_seconds": result.prompt_seconds,
            "generation_seconds": result.generation_seconds,
        }


def compress(model, out, calib=None, calib_tokens=0, lowrank=None, rank_frac=0.0, rank=0, quant=None, quant_emb=False,
             quant_head=False, sparse_ffn=False, cluster_head=0, threads=0, seed=1, **extra):
    """Compresses `model` (a Model or a path) into the native file `out` with the recipe given as keyword arguments
    (the flags of `rwkv-lite compress`: lowrank="svd"|"asvd", rank_frac / rank, quant="int8"|"int4", quant_emb,
    quant_head, sparse_ffn, cluster_head=K, and any other field of rwkvl_compress_recipe by name, e.g. recall=0.98);
    calib: a text file for the calibrated passes (at most calib_tokens tokens). Returns the report as a dict."""
    import json
    m = model if isinstance(model, Model) else Model(model)
    r = lib.rwkvl_compress_default_recipe()
    if lowrank:
        v = ctypes.c_int()
        _check(lib.rwkvl_lowrank_method_from_string(lowrank.encode(), ctypes.byref(v)))
        r.lowrank = v.value
    if quant:
        v = ctypes.c_int()
        _check(lib.rwkvl_quant_from_string(quant.encode(), ctypes.byref(v)))
        r.quant = v.value
    r.rank_frac, r.rank = float(rank_frac), int(rank)
    r.quant_emb, r.quant_head, r.sparse_ffn = int(quant_emb), int(quant_head), int(sparse_ffn)
    r.cluster_head, r.n_threads, r.seed = int(cluster_head), int(threads), int(seed)
    keep = []
    for k, v in extra.items():
        if k not in dict(_capi.CompressRecipe._fields_):
            raise Error("invalid argument", f"unknown recipe field {k!r}")
        if isinstance(v, str):
            keep.append(v.encode())
            v = keep[-1]
        setattr(r, k, v)
    cal = None
    if calib is not None:
        data = open(calib, "rb").read()
        keep.append(data)
        cal = _capi.Calibration()
        cal.text, cal.text_len, cal.tokenizer, cal.max_tokens = data, len(data), m._tok, int(calib_tokens)
        cal.name = str(calib).encode()
        keep.append(cal.name)
    rep = _capi.CompressReport()
    _check(lib.rwkvl_compress(m._h, ctypes.byref(r), ctypes.byref(cal) if cal is not None else None, str(out).encode(),
                              None, None, ctypes.byref(rep)))
    try:
        n = ctypes.c_size_t()
        lib.rwkvl_compress_report_json(ctypes.byref(rep), None, 0, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value + 1)
        _check(lib.rwkvl_compress_report_json(ctypes.byref(rep), buf, n.value + 1, ctypes.byref(n)))
        return json.loads(buf.value.decode())
    finally:
        lib.rwkvl_compress_report_free(ctypes.byref(rep))

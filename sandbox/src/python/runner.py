"""Wall 1 of Orrery's Python sandbox: restricted execution.

This file is loaded once by the zygote (trusted code, real builtins). The
zygote calls `prepare(config_json)` before it forks anything, so every module
user code may import is already in memory; each forked child then calls
`run(code, options_json)` after its OS limits and seccomp filter are in place.

What user code gets:
- a curated builtins table: no open, eval, exec, compile, globals, locals,
  vars, breakpoint, help, exit; `input` only when the request has stdin;
  getattr/hasattr/setattr/delattr that refuse blocked attribute names;
  `__import__` replaced by an allowlist importer;
- allowed modules only as filtered copies ("proxies"): public attributes,
  no module-valued attributes except other allowed modules, and a short deny
  list of generic attribute gadgets (string.Formatter, functools.wraps...);
- an AST check before anything runs: no attribute (or match-class keyword)
  starting with "_" or with a frame/code/generator prefix (gi_, f_, tb_...),
  no name starting with "__", no relative import;
- `.format` / `.format_map` attribute reads are rewritten into a helper that
  refuses attribute fields starting with "_" in the format string
  (`"{0.__class__}".format(x)`).
"""

import ast
import builtins
import codecs
import collections
import functools
import gc
import io
import json
import sys
import types
import _string

USER_FILENAME = "<code>"
MAX_REPR = 64 * 1024
MAX_FRAMES = 20
BLOCKED_ATTR_PREFIXES = ("_", "gi_", "cr_", "ag_", "f_", "tb_", "co_")
ALLOWED_DUNDER_ATTRS = frozenset({"__init__", "__name__", "__doc__"})
RESERVED_DEF_NAMES = frozenset(
    {"__builtins__", "__import__", "__build_class__", "__name__", "__loader__", "__spec__"}
)
# Public attributes of allowed modules that would hand out a generic
# getattr/format primitive or an object leading back to the interpreter.
MODULE_DENY = {
    "string": {"Formatter"},
    "collections": {"UserString"},
    "functools": {"update_wrapper", "wraps", "WRAPPER_ASSIGNMENTS", "WRAPPER_UPDATES"},
    "random": {"SystemRandom"},
}
# Loaded lazily by allowed modules; importing them here keeps them working
# once the child can no longer open files.
LAZY_DEPENDENCIES = {"datetime": ["_strptime"], "re": ["sre_compile", "sre_parse"]}
INTERNAL_MODULES = frozenset(m for deps in LAZY_DEPENDENCIES.values() for m in deps if m.startswith("_"))

SAFE_BUILTIN_NAMES = """
abs all any ascii bin bool bytearray bytes callable chr classmethod complex dict
divmod enumerate filter float format frozenset hash hex id int isinstance
issubclass iter len list map max memoryview min next object oct ord pow print
property range repr reversed round set slice sorted staticmethod str sum super
tuple type zip __build_class__ NotImplemented Ellipsis None True False
""".split()


class SandboxViolation(Exception):
    """Raised when code tries to reach something the sandbox forbids."""


def _attr_blocked(name):
    if name in ALLOWED_DUNDER_ATTRS:
        return False
    return name.startswith(BLOCKED_ATTR_PREFIXES)


def _check_attr(name):
    if _attr_blocked(name):
        raise SandboxViolation(f"access to attribute '{name}' is not allowed")


# --- format strings ---------------------------------------------------------

def _check_format_string(fmt):
    for _literal, field, spec, _conv in _string.formatter_parser(fmt):
        if field:
            _first, rest = _string.formatter_field_name_split(field)
            for is_attr, key in rest:
                if is_attr:
                    _check_attr(key)
        if spec:
            _check_format_string(spec)


def _plain(text):
    # The characters str.format will really use: a str subclass cannot
    # show one string to the check and another to the formatter.
    return str.__str__(text)


def _safe_format(self, *args, **kwargs):
    fmt = _plain(self)
    _check_format_string(fmt)
    return str.format(fmt, *args, **kwargs)


def _safe_format_map(self, mapping):
    fmt = _plain(self)
    _check_format_string(fmt)
    return str.format_map(fmt, mapping)


_FORMATTERS = {"format": _safe_format, "format_map": _safe_format_map}
_REAL_FORMATTERS = {str.format: _safe_format, str.format_map: _safe_format_map}


def _wrap_formatter(value):
    """str.format reached any way (instance, type, subclass, super()) -> checked."""
    try:
        if value in _REAL_FORMATTERS:
            return _REAL_FORMATTERS[value]
    except TypeError:  # unhashable
        return value
    if isinstance(value, types.BuiltinMethodType) and isinstance(value.__self__, str):
        wrapped = _FORMATTERS.get(value.__name__)
        if wrapped is not None:
            return functools.partial(wrapped, value.__self__)
    return value


def _attr_name(name):
    # Only exact str: a subclass could lie to startswith().
    if type(name) is not str:
        raise TypeError("attribute name must be a string")
    return name


def guarded_getattr(obj, name, *default):
    """getattr for user code: blocked names refused, str.format checked."""
    _check_attr(_attr_name(name))
    value = getattr(obj, name, *default)
    return _wrap_formatter(value) if name in _FORMATTERS else value


def _guarded_hasattr(obj, name):
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def _guarded_setattr(obj, name, value):
    _check_attr(_attr_name(name))
    setattr(obj, name, value)


def _guarded_delattr(obj, name):
    _check_attr(_attr_name(name))
    delattr(obj, name)


# --- AST check --------------------------------------------------------------

class _Checker(ast.NodeTransformer):
    def _reject(self, node, what):
        raise SandboxViolation(f"line {getattr(node, 'lineno', '?')}: {what} is not allowed")

    def visit_Attribute(self, node):
        if _attr_blocked(node.attr):
            self._reject(node, f"access to attribute '{node.attr}'")
        self.generic_visit(node)
        if node.attr in _FORMATTERS and isinstance(node.ctx, ast.Load):
            call = ast.Call(
                func=ast.Name(id="__orrery_getattr__", ctx=ast.Load()),
                args=[node.value, ast.Constant(value=node.attr)],
                keywords=[],
            )
            return ast.copy_location(call, node)
        return node

    def visit_Name(self, node):
        if node.id.startswith("__"):
            self._reject(node, f"the name '{node.id}'")
        return node

    def _check_binding(self, node, name):
        if name and name != "_" and name.startswith("_"):
            self._reject(node, f"binding the name '{name}'")

    def visit_arg(self, node):
        self._check_binding(node, node.arg)
        return self.generic_visit(node)

    def visit_ExceptHandler(self, node):
        self._check_binding(node, node.name)
        return self.generic_visit(node)

    def visit_Global(self, node):
        for name in node.names:
            self._check_binding(node, name)
        return node

    visit_Nonlocal = visit_Global

    def _check_def(self, node):
        if node.name in RESERVED_DEF_NAMES or node.name.startswith("__orrery"):
            self._reject(node, f"defining '{node.name}'")
        return self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _check_def

    def visit_Import(self, node):
        for alias in node.names:
            for part in alias.name.split("."):
                if part.startswith("_"):
                    self._reject(node, f"importing '{alias.name}'")
            self._check_binding(node, alias.asname)
        return node

    def visit_ImportFrom(self, node):
        if node.level:
            self._reject(node, "a relative import")
        for part in (node.module or "").split("."):
            if part.startswith("_"):
                self._reject(node, f"importing '{node.module}'")
        for alias in node.names:
            if alias.name.startswith("_"):
                self._reject(node, f"importing '{alias.name}'")
            self._check_binding(node, alias.asname)
        return node

    def visit_MatchClass(self, node):
        for attr in node.kwd_attrs:
            if _attr_blocked(attr):
                self._reject(node, f"matching on attribute '{attr}'")
        return self.generic_visit(node)

    def visit_MatchAs(self, node):
        self._check_binding(node, node.name)
        return self.generic_visit(node)

    def visit_MatchStar(self, node):
        self._check_binding(node, node.name)
        return node

    def visit_MatchMapping(self, node):
        self._check_binding(node, node.rest)
        return self.generic_visit(node)


# --- modules ----------------------------------------------------------------

def _build_proxies(allowed):
    real = {}
    for name in allowed:
        __import__(name)
        real[name] = sys.modules[name]
        for dep in LAZY_DEPENDENCIES.get(name, ()):
            __import__(dep)
    proxies = {name: types.ModuleType(name, getattr(mod, "__doc__", None)) for name, mod in real.items()}
    by_module = {id(mod): name for name, mod in real.items()}
    for name, mod in real.items():
        proxy = proxies[name]
        deny = MODULE_DENY.get(name, set())
        public = []
        for attr, value in vars(mod).items():
            if attr.startswith("_") or attr in deny:
                continue
            if isinstance(value, types.ModuleType):
                target = by_module.get(id(value))
                if target is None:
                    continue
                value = proxies[target]
            setattr(proxy, attr, value)
            public.append(attr)
        proxy.__all__ = sorted(public)
    return proxies


def _make_importer(proxies):
    def restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            raise ImportError("relative imports are not allowed")
        if name in INTERNAL_MODULES:
            # C code of an allowed module importing its helper (datetime's
            # strptime imports _strptime through builtins.__import__). User
            # source cannot name these: the AST check refuses "_" imports.
            return sys.modules[name]
        if name not in proxies:
            raise ImportError(f"import of module '{name}' is not allowed in the sandbox")
        if fromlist:
            return proxies[name]
        return proxies[name.split(".")[0]] if name.split(".")[0] in proxies else proxies[name]

    return restricted_import


def _make_builtins(state, with_input):
    table = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    for name, value in vars(builtins).items():
        if isinstance(value, type) and issubclass(value, BaseException):
            table[name] = value
    table.update(
        getattr=guarded_getattr,
        hasattr=_guarded_hasattr,
        setattr=_guarded_setattr,
        delattr=_guarded_delattr,
        __import__=state["importer"],
        __orrery_getattr__=guarded_getattr,
        __name__="builtins",
    )
    table["SandboxViolation"] = SandboxViolation
    if with_input:
        table["input"] = builtins.input
    return table


_STATE = {}


def prepare(config_json):
    """Import allowed modules once, in the zygote, before any fork."""
    config = json.loads(config_json)
    # Codec lookups import modules; do them while files can still be read.
    for codec in ("utf-8", "ascii", "latin-1", "idna"):
        codecs.lookup(codec)
    for extra in config.get("preload", []):
        __import__(extra)
    proxies = _build_proxies(config["allowed_modules"])
    _STATE["proxies"] = proxies
    _STATE["importer"] = _make_importer(proxies)
    # Objects created so far are shared copy-on-write with every child:
    # keep the cyclic GC from touching (and so copying) their pages.
    gc.collect()
    gc.freeze()


# --- one execution (in the forked child) ------------------------------------

def _format_traceback(exc, lines):
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == USER_FILENAME:
            frames.append((tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    out = ["Traceback (most recent call last):"]
    if len(frames) > MAX_FRAMES:
        omitted = len(frames) - MAX_FRAMES
        frames = frames[:MAX_FRAMES // 2] + [None] + frames[-MAX_FRAMES // 2:]
    for frame in frames:
        if frame is None:
            out.append(f"  [... {omitted} frames omitted ...]")
            continue
        lineno, name = frame
        out.append(f'  File "{USER_FILENAME}", line {lineno}, in {name}')
        if 0 < lineno <= len(lines):
            out.append("    " + lines[lineno - 1].strip())
    out.append(_exc_line(exc))
    return "\n".join(out)


def _exc_message(exc):
    try:
        return str(exc)
    except BaseException:
        return "<unprintable exception>"


def _exc_line(exc):
    msg = _exc_message(exc)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _error(exc, lines, traceback=True):
    return {
        "type": type(exc).__name__,
        "message": _exc_message(exc),
        "traceback": _format_traceback(exc, lines) if traceback else None,
    }


def _writer(fd):
    # Line-buffered: a printed line is one chunk, sent as soon as it ends.
    raw = io.BufferedWriter(io.FileIO(fd, "w", closefd=False), buffer_size=16 * 1024)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True)


def _streams(has_stdin):
    sys.stdout, sys.stderr = _writer(1), _writer(2)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8",
                                 errors="replace") if has_stdin else None


def run(code, options_json):
    """Run user code; return the result as a JSON string (never raises)."""
    opts = json.loads(options_json)
    restricted = opts.get("restricted", True)
    has_stdin = opts.get("stdin", False)
    try:
        _streams(has_stdin)
        # No reseeding here: random registers an after-fork hook that reseeds
        # each child from getrandom, so children never share a sequence.
        result = _run(code, restricted, has_stdin)
    except MemoryError:
        result = {"status": "limit", "limit": "memory"}
    except BaseException as exc:  # a bug here must still produce an answer
        result = {"status": "crashed", "reason": f"runner: {type(exc).__name__}: {exc}"}
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
    try:
        return json.dumps(result)
    except MemoryError:
        return json.dumps({"status": "limit", "limit": "memory"})


def _run(code, restricted, has_stdin):
    lines = code.splitlines()
    try:
        tree = ast.parse(code, USER_FILENAME, "exec")
    except (SyntaxError, ValueError) as exc:
        return {"status": "error", "error": _error(exc, lines, traceback=False)}
    if restricted:
        try:
            tree = ast.fix_missing_locations(_Checker().visit(tree))
        except SandboxViolation as exc:
            return {"status": "rejected", "reason": str(exc)}
        except RecursionError:
            return {"status": "rejected", "reason": "code is nested too deeply"}
        namespace = {"__builtins__": _make_builtins(_STATE, has_stdin), "__name__": "__main__"}
    else:
        namespace = {"__builtins__": builtins, "__name__": "__main__"}
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    try:
        body = compile(tree, USER_FILENAME, "exec")
        tail = compile(last, USER_FILENAME, "eval") if last is not None else None
    except (SyntaxError, ValueError, RecursionError) as exc:
        return {"status": "error", "error": _error(exc, lines, traceback=False)}
    try:
        exec(body, namespace)
        value = eval(tail, namespace) if tail is not None else None
        shown = None
        if value is not None:
            shown = repr(value)
            if len(shown) > MAX_REPR:
                shown = shown[:MAX_REPR] + "..."
        return {"status": "ok", "value": shown}
    except MemoryError:
        return {"status": "limit", "limit": "memory"}
    except SandboxViolation as exc:
        return {"status": "rejected", "reason": str(exc)}
    except BaseException as exc:  # user code may raise anything, even SystemExit
        return {"status": "error", "error": _error(exc, lines)}

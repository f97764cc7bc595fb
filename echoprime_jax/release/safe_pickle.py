"""Reading EchoPrime's released pickles without letting them run code.

A pickle is a program: unpickling calls whatever importable callable the file names. EchoPrime
ships its candidate reports, labels and section map as pickles, so `release import` reads them
(only with `--trust-pickles`) through `load`, whose unpickler resolves only an allow-list of
names: plain containers, numbers and strings, NumPy arrays / scalars / dtypes and the pandas
basics (DataFrame, Series, Index and the internals that rebuild them). Anything else (os.system,
eval, subprocess, a custom class, getattr, functools.partial, ...) raises `UnsafePickle` before
it is called: a tampered file fails instead of running code. Nothing after the import unpickles:
what it reads is written out as JSON / Parquet / NumPy.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

# (module, name) pairs the unpickler may resolve. Constructors of plain values only: none of
# them runs code chosen by the file (a class's __reduce__ names a callable; these are the only
# callables a file can name).
_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
             "float", "complex", "bool", "slice", "range", "object")
_NUMPY_CORE = ("_reconstruct", "scalar", "_frombuffer")
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in _BUILTINS]
    + [("__builtin__", n) for n in _BUILTINS + ("xrange", "unicode", "long")]  # protocol <= 2
    + [("collections", "OrderedDict"), ("copyreg", "_reconstructor")]
    + [("_codecs", "encode")]  # bytes in protocol <= 2: encode(str, "latin1")
    + [(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                        "numpy._core.numeric") for n in _NUMPY_CORE]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("numpy", n) for n in ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                              "uint8", "uint16", "uint32", "uint64", "bool_", "str_")]
    + [("numpy.dtypes", n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType",
                                     "BoolDType", "ObjectDType", "StrDType", "UInt8DType")]
    + [("pandas.core.frame", "DataFrame"), ("pandas.core.series", "Series"),
       ("pandas.core.indexes.base", "Index"), ("pandas.core.indexes.base", "_new_Index"),
       ("pandas.core.indexes.range", "RangeIndex"),
       ("pandas.core.internals.managers", "BlockManager"),
       ("pandas.core.internals.managers", "SingleBlockManager"),
       ("pandas.core.internals.blocks", "new_block"),
       ("pandas._libs.internals", "_unpickle_block"),
       ("pandas._libs.internals", "BlockPlacement")]
    + [("pandas", n) for n in ("DataFrame", "Series", "Index", "RangeIndex", "StringDtype")]
    # pandas >= 3 keeps strings in Arrow arrays, rebuilt from their buffers
    + [("pandas.arrays", "ArrowStringArray"), ("pyarrow.lib", "_restore_array"),
       ("pyarrow.lib", "py_buffer"), ("pyarrow.lib", "type_for_alias")])


class UnsafePickle(ValueError):
  """The pickle names something outside the allow-list: it was not unpickled."""


class _AllowListUnpickler(pickle.Unpickler):

  def __init__(self, file, source: str):
    super().__init__(file)
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in ALLOWED:
      raise UnsafePickle(
          f"{self._source}: refused to unpickle: it names {module}.{name}, which is not a plain "
          "container, number, string, NumPy or pandas value (a pickle can run any code it "
          "names; this file is not what EchoPrime released, or was altered)")
    try:
      return super().find_class(module, name)
    except ImportError:
      raise UnsafePickle(f"{self._source}: holds {module}.{name} values; install that package "
                         f"({module.split('.')[0]}) to read it") from None

  def persistent_load(self, pid):  # torch-style external references: never followed
    raise UnsafePickle(f"{self._source}: refused: the pickle refers to external objects")


def load(path: str) -> Any:
  """Unpickle `path` with the allow-list. UnsafePickle when it names anything else; ValueError
  (one line) when it is not a readable pickle."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    return _AllowListUnpickler(io.BytesIO(data), path).load()
  except UnsafePickle:
    raise
  except Exception as e:  # truncated or not a pickle
    raise ValueError(f"{path}: not a readable pickle ({type(e).__name__})") from None

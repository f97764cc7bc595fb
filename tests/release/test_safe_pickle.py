"""The restricted unpickler of `release import --trust-pickles`: EchoPrime's kinds of values come
back equal; a planted payload is refused before it runs."""

import collections
import os
import pickle

import numpy as np
import pytest

from echoprime_jax.release import safe_pickle
from tests.pickle_payload import Payload


def _dump(tmp_path, obj, protocol=pickle.HIGHEST_PROTOCOL, name="x.pkl"):
  path = tmp_path / name
  path.write_bytes(pickle.dumps(obj, protocol=protocol))
  return str(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_released_kinds_of_values_round_trip(tmp_path, protocol):
  reports = [[(0, 3, 55.0), (2, 1, np.float64(2.5)), (7, 0, "")], [(1, 4, np.nan)]]
  labels = {"ejection_fraction": {"s1": 55.0, "s2": np.float32(40.5)},
            "pacemaker": {"s1": 1, "s3": 0}}
  sections = collections.OrderedDict(
      [("Left Ventricle", ["impella", "ejection_fraction"]), ("IVC", ["dilated_ivc"])])
  arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array(["x", "yz"]),
            "o": np.array([{"k": 1}, None], dtype=object), "s": {1, 2}, "f": frozenset("ab"),
            "n": np.int64(7), "c": 1 + 2j, "r": range(3), "bytes": b"\x00\x01"}
  for value in (reports, labels, sections, arrays):
    back = safe_pickle.load(_dump(tmp_path, value, protocol))
    # a set's repr follows its hash table, which string hashing (PYTHONHASHSEED) can reorder
    # between the pickled set and the rebuilt one: sets compare by value, the rest by repr
    sets = [k for k, v in value.items() if isinstance(v, (set, frozenset))] \
        if isinstance(value, dict) else []
    for k in sets:
      assert type(back[k]) is type(value[k]) and back[k] == value[k]
    strip = lambda d: {k: v for k, v in d.items() if k not in sets} if sets else d
    assert repr(strip(back)) == repr(strip(value))


def test_pandas_basics_round_trip(tmp_path):
  import pandas as pd  # requirements-dev (the runtime needs pandas only for pandas pickles)
  frame = pd.DataFrame({"Study": ["a", "b"], "x": [1.5, np.nan]})
  back = safe_pickle.load(_dump(tmp_path, frame))
  assert back.equals(frame)
  series = pd.Series([[(0, 1, 2.0)], [(3, 4, 5.0)]], name="reports")
  assert safe_pickle.load(_dump(tmp_path, series)).tolist() == series.tolist()


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_a_planted_payload_is_refused_before_it_runs(tmp_path, protocol):
  marker = tmp_path / "ran"
  # a payload hidden deep inside a value shaped like the released labels
  planted = {"ejection_fraction": {"s1": 55.0, "s2": [1, 2, Payload(marker)]}}
  path = _dump(tmp_path, planted, protocol)
  with pytest.raises(safe_pickle.UnsafePickle, match=r"builtins\.open|io\.open"):
    safe_pickle.load(path)
  assert not marker.exists()
  assert pickle.loads(open(path, "rb").read()) and marker.exists()  # the test can fail


class _System:
  def __reduce__(self):
    return (os.system, ("true",))


class _Eval:
  def __reduce__(self):
    return (eval, ("1 + 1",))


class _GetAttr:
  def __reduce__(self):
    return (getattr, (1, "real"))


@pytest.mark.parametrize("payload", [_System(), _Eval(), _GetAttr(), collections.Counter("ab")])
def test_other_callables_are_refused(tmp_path, payload):
  with pytest.raises(safe_pickle.UnsafePickle, match="refused to unpickle"):
    safe_pickle.load(_dump(tmp_path, {"x": payload}))


def test_not_a_pickle_is_one_clear_error(tmp_path):
  path = tmp_path / "truncated.pkl"
  path.write_bytes(pickle.dumps({"a": list(range(100))})[:20])
  with pytest.raises(ValueError, match="not a readable pickle"):
    safe_pickle.load(str(path))

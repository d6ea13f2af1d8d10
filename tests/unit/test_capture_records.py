"""initcontainer.records.NamedTuple behaves as typing.NamedTuple for everything we use."""

from __future__ import annotations

import copy
import pickle
import typing

import pytest

from initcontainer import records


class Ours(records.NamedTuple):
    """A doc."""

    table: str
    params: tuple[str, ...]
    position: int | None = None

    @property
    def size(self) -> int:
        return len(self.params)

    def line(self) -> str:
        return f"{self.table} {' '.join(self.params)}"


class Theirs(typing.NamedTuple):
    table: str
    params: tuple[str, ...]
    position: int | None = None


def test_construction_fields_and_defaults() -> None:
    for cls in (Ours, Theirs):
        value = cls("nat", ("-j", "RETURN"))
        assert tuple(value) == ("nat", ("-j", "RETURN"), None)
        assert value == cls(table="nat", params=("-j", "RETURN"), position=None)
        assert value == cls("nat", params=("-j", "RETURN"))
        assert (value.table, value.position) == ("nat", None)
        assert cls._fields == ("table", "params", "position")
        assert cls._field_defaults == {"position": None}
        assert value._asdict() == {"table": "nat", "params": ("-j", "RETURN"), "position": None}
        assert value._replace(position=1) == cls("nat", ("-j", "RETURN"), 1)
        assert hash(value) == hash(("nat", ("-j", "RETURN"), None))


def test_repr_is_the_same() -> None:
    assert repr(Ours("nat", (), 2)) == repr(Theirs("nat", (), 2)).replace("Theirs", "Ours")


def test_methods_properties_and_docstring_are_kept() -> None:
    value = Ours("nat", ("-j", "RETURN"))
    assert value.size == 2 and value.line() == "nat -j RETURN"
    assert Ours.__doc__ == "A doc."


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("nat",), {}),  # missing argument
        (("nat", (), 1, 2), {}),  # too many
        (("nat", ()), {"table": "x"}),  # given twice
        (("nat", ()), {"nope": 1}),  # unknown
    ],
)
def test_bad_construction_is_a_type_error(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(TypeError):
        Theirs(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Ours(*args, **kwargs)  # type: ignore[arg-type]


def test_immutable_without_instance_dict() -> None:
    value = Ours("nat", ())
    with pytest.raises(AttributeError):
        value.table = "mangle"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        value.other = 1  # type: ignore[attr-defined]


def test_copy_and_pickle() -> None:
    value = Ours("nat", ("a",), 3)
    assert copy.deepcopy(value) == value and copy.copy(value) is not None
    assert pickle.loads(pickle.dumps(value)) == value


def test_a_required_field_after_a_default_is_refused() -> None:
    with pytest.raises(TypeError):

        class Bad(records.NamedTuple):
            a: int = 1
            b: int  # type: ignore[misc]

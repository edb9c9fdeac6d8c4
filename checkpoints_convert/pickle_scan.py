"""Check a checkpoint's pickle BEFORE torch unpickles it: one linear walk over its opcodes.

torch's restricted unpickler (`weights_only=True`) never runs code from the file, but a hostile
file can still hurt it: a global named by a 100,000-character string makes torch's own error
formatting take minutes; a dict key that is a tuple nested 200,000 deep crashes the process;
`bytearray(N)` (on torch's allowlist) turns 5 bytes into N; a tensor view with stride 0 over a
one-element storage turns into gigabytes when cast; a storage the file declares but never fills
hands out uninitialised memory.

`scan(data)` walks the opcodes (`pickletools.genops`, linear in the size) and simulates the
stack with light stand-ins, never with the objects themselves, so it can check what a weights
file needs and nothing more:
- only the binary opcodes `torch.save` writes (protocol 2 and the framing of later ones);
- only the globals in `ALLOWED_GLOBALS`, each in the role it has in a weights file (a tensor
  rebuild is called, a storage type appears in a storage id), names at most `MAX_NAME` long;
- containers nested at most `MAX_DEPTH` deep;
- every tensor fits inside its storage, with no more elements than the storage holds (no
  stride-0 blow-ups); every storage id is well formed and declared once.
It returns the storages declared (key -> bytes), which read.py checks against the archive.
"""

from __future__ import annotations

import math
import pickletools
from dataclasses import dataclass, field
from typing import BinaryIO

MAX_PICKLE_BYTES = 256 * 1024 * 1024  # sd-v1-4-full-ema.ckpt's data.pkl is about 0.3 MB
MAX_NAME = 200  # the longest allowed global is 39 characters
MAX_DEPTH = 64  # a Lightning checkpoint with optimizer states nests about 10 deep
MAX_DIMS = 16

# Bytes per element of each storage type torch writes into a storage id.
STORAGE_TYPES = {
    "torch.DoubleStorage": 8, "torch.FloatStorage": 4, "torch.HalfStorage": 2, "torch.BFloat16Storage": 2,
    "torch.LongStorage": 8, "torch.IntStorage": 4, "torch.ShortStorage": 2, "torch.CharStorage": 1,
    "torch.ByteStorage": 1, "torch.BoolStorage": 1, "torch.ComplexFloatStorage": 8,
    "torch.ComplexDoubleStorage": 16,
}
REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2"
REBUILD_PARAMETER = "torch._utils._rebuild_parameter"
ORDERED_DICT = "collections.OrderedDict"
# Called with REDUCE: what a state dict is made of, and the constructors protocol 2 uses for
# bytes and sets (`_codecs.encode(text, "latin1")` is how protocol 2 spells a bytes object).
CALLABLES = {REBUILD_TENSOR, REBUILD_PARAMETER, ORDERED_DICT, "_codecs.encode", "builtins.set", "builtins.frozenset"}
# Classes the original training run pickled into released checkpoints (read.py replaces them
# with an inert stand-in): they may appear as values and be created with NEWOBJ, nothing else.
INERT_CLASSES = {"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"}
ALLOWED_GLOBALS = CALLABLES | INERT_CLASSES | set(STORAGE_TYPES)

# Opcodes a weights pickle is written with; anything else (INST, OBJ, text opcodes, out-of-band
# buffers, NEWOBJ_EX, EXT*) is refused by name.
LEAVES = {"NONE", "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT",
          "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}


class PickleRefused(ValueError):
    """The pickle does something a weights file never does; the message says what."""


class BrokenFile(PickleRefused):
    """Not hostile as far as can be told, just malformed or truncated."""


@dataclass(eq=False)
class Item:
    """A stand-in for one object on the simulated stack."""

    kind: str  # atom, bytes, global, tuple, list, dict, set, storage, tensor, object, mark
    value: object = None  # atom: the value; global: its name; storage: its key
    items: list = field(default_factory=list)  # tuple and list elements
    depth: int = 0
    numel: int = 0  # storage and tensor elements


@dataclass
class Storage:
    type_name: str
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * STORAGE_TYPES[self.type_name]


@dataclass
class ScanResult:
    root: Item
    storages: dict[str, Storage]  # key -> declared storage


def scan(data: bytes | BinaryIO, storage_id_length: int = 5, storages: dict[str, Storage] | None = None
         ) -> ScanResult:
    """Walk one pickle: bytes, or a file positioned at its start (left just after its STOP).
    `storage_id_length`: 5 for the zip format's storage ids ('storage', type, key, location,
    numel), 6 for the legacy format's (+ view metadata, always None). `storages` collects the
    declared storages across the pickles of one file."""
    if isinstance(data, bytes) and len(data) > MAX_PICKLE_BYTES:
        raise PickleRefused(f"its pickle is {len(data):,} bytes; weights files need under {MAX_PICKLE_BYTES:,}")
    return _Walk(storage_id_length, {} if storages is None else storages).run(data)


class _Walk:
    def __init__(self, storage_id_length: int, storages: dict[str, Storage]):
        self.stack: list[Item] = []
        self.memo: dict[int, Item] = {}
        self.storage_id_length = storage_id_length
        self.storages = storages

    def run(self, data: bytes | BinaryIO) -> ScanResult:
        start = 0 if isinstance(data, bytes) else data.tell()
        try:
            for opcode, arg, position in pickletools.genops(data):
                if position - start > MAX_PICKLE_BYTES:
                    raise PickleRefused(f"its pickle is over {MAX_PICKLE_BYTES:,} bytes long")
                self.step(opcode.name, arg, position)
                if opcode.name == "STOP":
                    if len(self.stack) != 1:
                        raise PickleRefused(f"its pickle stops with {len(self.stack)} items on the stack, not 1")
                    return ScanResult(self.stack[0], self.storages)
        except PickleRefused:
            raise
        except Exception as error:  # noqa: BLE001 - genops on bytes that are not a pickle
            raise BrokenFile(f"its pickle is malformed ({type(error).__name__}: {str(error)[:200]!r})") from None
        raise BrokenFile("its pickle has no STOP opcode (truncated)")

    # -- the stack -------------------------------------------------------------------------------

    def push(self, item: Item) -> None:
        if item.depth > MAX_DEPTH:
            raise PickleRefused(f"its pickle nests containers more than {MAX_DEPTH} deep")
        self.stack.append(item)

    def pop(self) -> Item:
        if not self.stack or self.stack[-1].kind == "mark":
            raise PickleRefused("its pickle pops from an empty stack")
        return self.stack.pop()

    def top(self) -> Item:
        item = self.pop()
        self.stack.append(item)
        return item

    def pop_mark(self) -> list[Item]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i].kind == "mark":
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise PickleRefused("its pickle has no MARK for a collection opcode")

    def grow(self, container: Item, children: list[Item]) -> None:
        if container.kind not in ("list", "dict", "set"):
            raise PickleRefused(f"its pickle adds items to a {container.kind}, not to a list, dict or set")
        container.depth = max([container.depth] + [child.depth + 1 for child in children])
        if container.depth > MAX_DEPTH:
            raise PickleRefused(f"its pickle nests containers more than {MAX_DEPTH} deep")
        if container.kind == "list":
            container.items.extend(children)

    @staticmethod
    def container(kind: str, items: list[Item]) -> Item:
        depth = 1 + max((item.depth for item in items), default=0)
        return Item(kind, items=items if kind in ("tuple", "list") else [], depth=depth)

    # -- one opcode ------------------------------------------------------------------------------

    def step(self, name: str, arg: object, position: int) -> None:
        if name in LEAVES:
            return self.push(Item("atom", arg))
        if name == "PROTO" and not 2 <= arg <= 5:
            raise PickleRefused(f"its pickle declares protocol {arg}; torch writes 2 (Python knows 0 to 5)")
        if name in ("PROTO", "FRAME", "STOP"):
            return None
        if name == "MARK":
            return self.stack.append(Item("mark"))
        if name == "POP":
            return self.pop() and None
        if name == "POP_MARK":
            return self.pop_mark() and None
        if name == "DUP":
            return self.push(self.top())
        if name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not self.stack or self.stack[-1].kind == "mark":
                raise PickleRefused(f"its pickle memoizes nothing at byte {position}")
            self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.stack[-1]
            return None
        if name in ("BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise PickleRefused(f"its pickle reads memo slot {arg} before writing it (byte {position})")
            return self.push(self.memo[arg])
        if name in ("EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"):
            return self.push(self.container(name[6:].lower(), []))
        if name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            items = [self.pop() for _ in range(int(name[-1]))][::-1]
            return self.push(self.container("tuple", items))
        if name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
            kind = {"TUPLE": "tuple", "LIST": "list", "DICT": "dict", "FROZENSET": "set"}[name]
            return self.push(self.container(kind, self.pop_mark()))
        if name in ("APPEND", "SETITEM"):
            children = [self.pop() for _ in range(1 if name == "APPEND" else 2)][::-1]
            return self.grow(self.top(), children)
        if name in ("APPENDS", "SETITEMS", "ADDITEMS"):
            children = self.pop_mark()
            return self.grow(self.top(), children)
        if name in ("GLOBAL", "STACK_GLOBAL"):
            return self.push(Item("global", self.global_name(name, arg)))
        if name == "BINPERSID":
            return self.push(self.storage_id(self.pop()))
        if name == "REDUCE":
            args, function = self.pop(), self.pop()
            return self.push(self.call(function, args))
        if name == "NEWOBJ":
            args, cls = self.pop(), self.pop()
            if cls.kind != "global" or cls.value not in INERT_CLASSES:
                raise PickleRefused(f"its pickle creates an object of {self.describe(cls)} (NEWOBJ)")
            return self.push(Item("object", depth=args.depth + 1))
        if name == "BUILD":
            state, target = self.pop(), self.pop()
            if target.kind not in ("dict", "object"):
                raise PickleRefused(f"its pickle sets the state of a {self.describe(target)} (BUILD)")
            target.depth = max(target.depth, state.depth + 1)
            return self.push(target)
        raise PickleRefused(f"its pickle uses the opcode {name} (byte {position}), which weights files never need")

    def global_name(self, opcode: str, arg: object) -> str:
        if opcode == "GLOBAL":
            module, _, qualname = str(arg).partition(" ")
        else:
            qualname_item, module_item = self.pop(), self.pop()
            if not (module_item.kind == qualname_item.kind == "atom" and isinstance(module_item.value, str)
                    and isinstance(qualname_item.value, str)):
                raise PickleRefused("its pickle names a global with something other than two strings")
            module, qualname = module_item.value, qualname_item.value
        name = f"{module}.{qualname}"
        if len(name) > MAX_NAME:
            raise PickleRefused(f"its pickle asks for a global named by {len(name):,} characters "
                                f"(starting {name[:60]!r}), which a weights file has no reason to contain")
        if name not in ALLOWED_GLOBALS:
            raise PickleRefused(f"the pickle asks for {name!r}, which a weights file has no reason to contain "
                                "(it could run code)")
        return name

    def call(self, function: Item, args: Item) -> Item:
        if function.kind != "global" or function.value not in CALLABLES:
            raise PickleRefused(f"its pickle calls {self.describe(function)} (REDUCE)")
        if args.kind != "tuple":
            raise PickleRefused(f"its pickle calls {function.value!r} with a {args.kind}, not a tuple")
        if function.value == REBUILD_TENSOR:
            return self.tensor(args.items)
        if function.value == REBUILD_PARAMETER:
            if not args.items or args.items[0].kind != "tensor":
                raise PickleRefused(f"its pickle calls {REBUILD_PARAMETER!r} without a tensor")
            return args.items[0]
        if function.value == ORDERED_DICT:
            return Item("dict", depth=args.depth)
        if function.value == "_codecs.encode":
            return Item("bytes", depth=args.depth)
        return Item("set", depth=args.depth)

    def tensor(self, args: list[Item]) -> Item:
        """`_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])`:
        the tensor must lie inside its storage and hold no more elements than it (stride 0 views
        of a small storage would become huge once copied)."""
        if len(args) not in (6, 7) or args[0].kind != "storage":
            raise PickleRefused(f"its pickle rebuilds a tensor with {len(args)} arguments / no storage")
        offset, size, stride = self.integer(args[1]), self.integers(args[2]), self.integers(args[3])
        if len(size) != len(stride):
            raise PickleRefused(f"its pickle rebuilds a tensor of size {size} with strides {stride}")
        numel = math.prod(size)
        storage = self.storages[args[0].value]
        if numel:
            end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
            if end > storage.numel or numel > storage.numel:
                raise PickleRefused(
                    f"a tensor of size {tuple(size)} (strides {tuple(stride)}, offset {offset}) needs "
                    f"{max(end, numel):,} elements but its storage {args[0].value!r} holds {storage.numel:,}")
        return Item("tensor", depth=2, numel=numel)

    def storage_id(self, pid: Item) -> Item:
        """('storage', storage type, key, location, numel[, view metadata None])."""
        items = pid.items
        if (pid.kind != "tuple" or len(items) != self.storage_id_length or items[0].value != "storage"
                or items[1].kind != "global" or items[1].value not in STORAGE_TYPES
                or items[2].kind != "atom" or not isinstance(items[2].value, str)
                or items[3].kind != "atom" or not isinstance(items[3].value, str)
                or (len(items) == 6 and not (items[5].kind == "atom" and items[5].value is None))):
            raise PickleRefused("its pickle has a persistent id that is not a plain storage id")
        key, numel = items[2].value, self.integer(items[4])
        if len(key) > MAX_NAME:
            raise PickleRefused(f"its pickle names a storage by {len(key):,} characters")
        declared = Storage(items[1].value, numel)
        if self.storages.setdefault(key, declared) != declared:
            raise PickleRefused(f"its pickle declares storage {key!r} twice, differently")
        return Item("storage", key, depth=1, numel=numel)

    @staticmethod
    def integer(item: Item) -> int:
        if item.kind != "atom" or type(item.value) is not int or item.value < 0:
            raise PickleRefused(f"its pickle has {_Walk.describe(item)} where a size or offset (int >= 0) belongs")
        return item.value

    @staticmethod
    def integers(item: Item) -> list[int]:
        if item.kind != "tuple" or len(item.items) > MAX_DIMS:
            raise PickleRefused(f"its pickle has {_Walk.describe(item)} where a tensor size (a short tuple) belongs")
        return [_Walk.integer(entry) for entry in item.items]

    @staticmethod
    def describe(item: Item) -> str:
        if item.kind == "global":
            return repr(item.value)
        if item.kind == "atom":
            return f"the value {item.value!r:.60}"
        return f"a {item.kind}"

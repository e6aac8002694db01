"""The DWARF side of a binary, for variable capture: Go types, functions, lexical scopes
and variable locations (location expressions are evaluated by dwarf_expr).

One `DebugInfo` per build id, reached as `BinaryInfo.debug` (binary/info.py), reads only
what a capture needs:

- types come from the one compilation unit the Go linker puts them in (a "runtime" CU
  whose first children are type DIEs); single types are parsed on demand by DIE offset,
  and the name / runtime-type indexes are built once per binary (and kept on disk, keyed
  by build id, so a second process starts warm);
- functions are found in the CUs of their package only (Go names its CUs by package
  path), so capturing `main.settle` never parses the runtime's DWARF;
- function names for code addresses (func values, "which function holds this PC")
  come from the binary's pclntab (BinaryInfo.symtab).

Go-specific DWARF attributes: DW_AT_go_kind 0x2900 (reflect.Kind), DW_AT_go_key 0x2901,
DW_AT_go_elem 0x2902, DW_AT_go_embedded_field 0x2903, DW_AT_go_runtime_type 0x2904: the
offset of the type's runtime descriptor from `runtime.types` (moduledata.types), which is
how an interface's dynamic type pointer is mapped back to a DWARF type.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Iterator

from elftools.dwarf.locationlists import LocationParser
from elftools.elf.elffile import ELFFile

from pytest_sideeye.binary import closure_copies
from pytest_sideeye.binary.dwarf_expr import LocationEvaluator, Piece
from pytest_sideeye.binary.pclntab import Symtab
from pytest_sideeye.errors import MissingDebugInfo, NotGoBinary
from pytest_sideeye.files import JsonCache

AT_GO_KIND = 0x2900
AT_GO_KEY = 0x2901
AT_GO_ELEM = 0x2902
AT_GO_EMBEDDED = 0x2903
AT_GO_RUNTIME_TYPE = 0x2904

# reflect.Kind values carried by DW_AT_go_kind.
GO_KIND_ARRAY, GO_KIND_CHAN, GO_KIND_FUNC, GO_KIND_INTERFACE = 17, 18, 19, 20
GO_KIND_MAP, GO_KIND_PTR, GO_KIND_SLICE, GO_KIND_STRING = 21, 22, 23, 24
GO_KIND_UINTPTR, GO_KIND_UNSAFEPTR = 12, 26

INDEX_CACHE = JsonCache("dwarf", schema=2)


@dataclass
class Field:
    name: str
    offset: int
    type: "GoType"
    embedded: bool = False


@dataclass(eq=False)
class GoType:
    """A Go type as far as decoding needs it.

    kind is one of: bool int uint float complex string ptr unsafeptr uintptr struct array
    slice map chan func iface eface void. For map/chan, `impl` is the runtime struct the
    map/chan pointer points to (hash<K,V> / map<K,V> / hchan<T>); for interfaces `impl` is
    runtime.iface / runtime.eface."""
    offset: int
    name: str
    kind: str
    size: int
    elem: "GoType | None" = None
    key: "GoType | None" = None
    fields: list[Field] = field(default_factory=list)
    count: int = 0
    impl: "GoType | None" = None

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def __repr__(self) -> str:
        return f"GoType({self.name!r}, {self.kind}, size={self.size})"


@dataclass
class VarDIE:
    name: str
    type_offset: int
    location: object     # the raw DW_AT_location attribute, or None
    is_param: bool
    die_offset: int = 0  # DWARF 5 location lists need their DIE to be parsed


@dataclass
class Scope:
    """A subprogram, lexical block or inlined call, reduced to what capture needs."""
    tag: str
    ranges: list[tuple[int, int]]
    variables: list[VarDIE]
    children: list["Scope"]
    origin: int | None = None   # DIE offset of the abstract subprogram (inlined calls)
    cu_offset: int = 0

    def contains(self, pc: int) -> bool:
        return any(lo <= pc < hi for lo, hi in self.ranges)


@dataclass
class FunctionInfo:
    name: str
    concrete: Scope | None        # the out-of-line body, when the function has one
    abstract_offset: int | None   # DW_AT_inline abstract DIE, when inlined somewhere
    variables: dict[str, int]     # every param/local name -> DIE offset of its type


class DebugInfo:
    """Lazy, cached view of one Go binary's DWARF."""

    def __init__(self, path: str | os.PathLike, *, build_id: str, symtab: Symtab,
                 types_base: int):
        self.path = str(path)
        self._file = open(self.path, "rb")
        try:
            self.elf = ELFFile(self._file)
        except Exception as e:  # not an ELF at all
            raise NotGoBinary(f"{self.path} is not an ELF binary ({e})") from None
        if self.elf.get_section_by_name(".gopclntab") is None and \
                self.elf.get_section_by_name(".go.buildinfo") is None:
            raise NotGoBinary(f"{self.path} is not a Go binary (no .gopclntab)")
        if not self.elf.has_dwarf_info() or self.elf.get_section_by_name(".debug_info") is None:
            raise MissingDebugInfo(f"{self.path} has no DWARF (built with -ldflags=-w or "
                                   "stripped); variable capture needs it")
        self.dwarf = self.elf.get_dwarf_info(relocate_dwarf_sections=False)
        self.build_id = build_id
        self.symtab = symtab
        # moduledata.types: runtime type descriptors are addressed relative to it.
        self.types_base = types_base
        self._func_names: set[str] | None = None
        self._lock = threading.RLock()
        self._types: dict[int, GoType] = {}
        self._cus_by_name: dict[str, list] | None = None
        self._functions: dict[str, FunctionInfo | None] = {}
        self._type_cu = None
        self._name_index: dict[str, int] | None = None
        self._rtype_index: dict[int, int] | None = None
        self._expr = LocationEvaluator(self.dwarf.structs)
        self._locranges: dict[int, list[tuple[int, int, list[int]]]] = {}
        self._cus_by_offset: dict[int, object] = {}
        self._loc_parser = LocationParser(self.dwarf.location_lists())
        self._package_vars: dict[str, dict[str, dict[str, int]]] = {}
        self._inliners_warm: set[str] = set()
        # Parameter DIE offset -> the extra locations of its copies in deferred closures
        # (closure_copies.py), found with the function.
        self._copies: dict[int, list[tuple[int, int, list[int]]]] = {}

    # --- functions by address (pclntab) ---------------------------------------------
    def function_at(self, pc: int) -> str | None:
        """Name of the function whose code holds `pc`."""
        f = self.symtab.func_for_pc(pc)
        return f.name if f is not None else None

    def function_entry(self, name: str) -> int | None:
        f = self.symtab.func_by_name(name)
        return f.entry if f is not None else None

    @property
    def func_names(self) -> set[str]:
        if self._func_names is None:
            self._func_names = {f.name for f in self.symtab.funcs()}
        return self._func_names

    # --- compilation units -----------------------------------------------------------
    def _cu_map(self) -> dict[str, list]:
        if self._cus_by_name is None:
            by_name: dict[str, list] = {}
            for cu in self.dwarf.iter_CUs():
                top = cu.get_top_DIE()
                name = top.attributes.get("DW_AT_name")
                by_name.setdefault(name.value.decode() if name else "", []).append(cu)
            self._cus_by_name = by_name
        return self._cus_by_name

    def _types_cu(self):
        """The CU holding the type DIEs: a "runtime" CU whose first children are types."""
        if self._type_cu is None:
            candidates = self._cu_map().get("runtime", [])
            for cu in candidates:
                for i, die in enumerate(cu.get_top_DIE().iter_children()):
                    if die.tag in _TYPE_TAGS:
                        self._type_cu = cu
                        break
                    if i >= 4:
                        break
                if self._type_cu is not None:
                    break
            if self._type_cu is None:  # unusual layout: take the biggest runtime CU
                self._type_cu = max(candidates or list(self.dwarf.iter_CUs()),
                                    key=lambda c: c.size)
        return self._type_cu

    # --- type indexes (name, runtime type) --------------------------------------------
    def _indexes(self) -> tuple[dict[str, int], dict[int, int]]:
        with self._lock:
            if self._name_index is None:
                cached = self._load_index_cache()
                if cached is None:
                    cached = self._scan_types()
                    self._save_index_cache(cached)
                self._name_index, self._rtype_index = cached
            return self._name_index, self._rtype_index

    def _scan_types(self) -> tuple[dict[str, int], dict[int, int]]:
        names: dict[str, int] = {}
        alias_only: set[str] = set()
        rtypes: dict[int, int] = {}
        for die in self._types_cu().get_top_DIE().iter_children():
            if die.tag not in _TYPE_TAGS:
                continue
            a = die.attributes
            n = a.get("DW_AT_name")
            if n is not None:
                name = n.value.decode(errors="replace")
                # Prefer the type itself over a plain `typedef T -> T` alias of it.
                alias = die.tag == "DW_TAG_typedef" and AT_GO_KIND not in a
                if name not in names or (name in alias_only and not alias):
                    names[name] = die.offset
                    alias_only.discard(name)
                    if alias:
                        alias_only.add(name)
            rt = a.get(AT_GO_RUNTIME_TYPE)
            if rt is not None and rt.value:
                rtypes.setdefault(rt.value, die.offset)
        return names, rtypes

    def _load_index_cache(self):
        d = INDEX_CACHE.load(self.build_id)
        try:
            return d["names"], {int(k): v for k, v in d["rtypes"].items()}
        except (TypeError, KeyError, ValueError, AttributeError):
            return None

    def _save_index_cache(self, idx) -> None:
        INDEX_CACHE.store(self.build_id, {"names": idx[0],
                                          "rtypes": {str(k): v for k, v in idx[1].items()}})

    def warm(self) -> None:
        """Build the indexes now (plan time) so nothing is parsed during a pause."""
        self._indexes()

    def type_by_name(self, name: str) -> GoType | None:
        off = self._indexes()[0].get(name)
        return self.type_at(off) if off is not None else None

    def type_by_runtime_addr(self, addr: int) -> GoType | None:
        """DWARF type of the runtime type descriptor at `addr` (an interface's type word)."""
        off = self._indexes()[1].get(addr - self.types_base)
        return self.type_at(off) if off is not None else None

    # --- types -----------------------------------------------------------------------
    def type_at(self, offset: int) -> GoType:
        with self._lock:
            t = self._types.get(offset)
            if t is None:
                t = self._build_type(offset)
            return t

    def _die(self, offset: int):
        return self.dwarf.get_DIE_from_refaddr(offset)

    def _build_type(self, offset: int) -> GoType:
        die = self._die(offset)
        a = die.attributes
        name = a["DW_AT_name"].value.decode(errors="replace") if "DW_AT_name" in a else ""
        size = a["DW_AT_byte_size"].value if "DW_AT_byte_size" in a else 0
        gk = a[AT_GO_KIND].value if AT_GO_KIND in a else None
        tag = die.tag
        t = GoType(offset, name, "void", size)
        self._types[offset] = t  # registered before children: recursive types terminate
        if tag == "DW_TAG_typedef":
            under = self.type_at(_ref(die, "DW_AT_type")) if "DW_AT_type" in a else None
            self._typedef(t, die, gk, under)
        elif tag == "DW_TAG_base_type":
            t.kind = _base_kind(a["DW_AT_encoding"].value if "DW_AT_encoding" in a else 0, gk)
        elif tag == "DW_TAG_pointer_type":
            if "DW_AT_type" not in a or gk == GO_KIND_UNSAFEPTR:
                t.kind, t.size = "unsafeptr", 8
            else:
                t.kind, t.size, t.elem = "ptr", 8, self.type_at(_ref(die, "DW_AT_type"))
        elif tag == "DW_TAG_structure_type":
            self._struct(t, die, gk)
        elif tag == "DW_TAG_array_type":
            t.kind, t.elem = "array", self.type_at(_ref(die, "DW_AT_type"))
            t.count = _array_count(die, t)
        elif tag == "DW_TAG_subroutine_type":
            t.kind, t.size = "func", 8
        return t

    def _typedef(self, t: GoType, die, gk: int | None, under: GoType | None) -> None:
        a = die.attributes
        if gk == GO_KIND_MAP:
            t.kind, t.size = "map", 8
            t.impl = under.elem if under is not None and under.kind == "ptr" else under
            t.key = self.type_at(_ref(die, AT_GO_KEY)) if AT_GO_KEY in a else None
            t.elem = self.type_at(_ref(die, AT_GO_ELEM)) if AT_GO_ELEM in a else None
        elif gk == GO_KIND_CHAN:
            t.kind, t.size = "chan", 8
            t.impl = under.elem if under is not None and under.kind == "ptr" else under
            t.elem = self.type_at(_ref(die, AT_GO_ELEM)) if AT_GO_ELEM in a else None
        elif gk == GO_KIND_INTERFACE or (under is not None and under.kind in ("iface", "eface")):
            impl = under.impl if under is not None and under.kind in ("iface", "eface") else under
            t.kind, t.size, t.impl = "eface", 16, impl
            if impl is not None and impl.field("tab") is not None:
                t.kind = "iface"
        elif gk == GO_KIND_FUNC or (under is not None and under.kind == "func"):
            t.kind, t.size = "func", 8
        elif under is not None:
            # A plain alias (Go emits `typedef main.T -> struct main.T`): same type.
            t.kind, t.size, t.elem, t.key = under.kind, under.size, under.elem, under.key
            t.fields, t.count, t.impl = under.fields, under.count, under.impl
            if not t.name:
                t.name = under.name

    def _struct(self, t: GoType, die, gk: int | None) -> None:
        a = die.attributes
        t.fields = []
        for c in die.iter_children():
            if c.tag != "DW_TAG_member":
                continue
            ca = c.attributes
            t.fields.append(Field(ca["DW_AT_name"].value.decode(errors="replace"),
                                  _member_offset(ca), self.type_at(_ref(c, "DW_AT_type")),
                                  bool(ca[AT_GO_EMBEDDED].value) if AT_GO_EMBEDDED in ca
                                  else False))
        if gk == GO_KIND_STRING or (t.name == "string" and t.field("str") is not None):
            t.kind = "string"
        elif gk == GO_KIND_SLICE or (t.field("array") and t.field("len") and t.field("cap")
                                     and t.name.startswith("[]")):
            t.kind = "slice"
            if AT_GO_ELEM in a:
                t.elem = self.type_at(_ref(die, AT_GO_ELEM))
            else:
                arr = t.field("array").type
                t.elem = arr.elem if arr.kind == "ptr" else None
        elif t.field("_type") is not None and t.field("data") is not None and len(t.fields) == 2:
            t.kind, t.impl = "eface", t
        elif t.field("tab") is not None and t.field("data") is not None and len(t.fields) == 2:
            t.kind, t.impl = "iface", t
        else:
            t.kind = "struct"

    # --- functions ---------------------------------------------------------------------
    def function(self, name: str) -> FunctionInfo | None:
        """The function's concrete body and/or abstract (inlined) DIE, or None if absent."""
        with self._lock:
            if name not in self._functions:
                self._functions[name] = self._find_function(name)
            return self._functions[name]

    def _find_function(self, name: str) -> FunctionInfo | None:
        found = self._find_function_in(name, self._cu_map().get(package_of(name), []))
        if found is None:
            # A function only ever inlined into other packages has its abstract DIE in the
            # compile unit of a package that inlines it: look everywhere (rare, slower).
            found = self._find_function_in(name, [cu for cus in self._cu_map().values()
                                                  for cu in cus])
        return found

    def _find_function_in(self, name: str, cus) -> FunctionInfo | None:
        concrete = None
        abstract = None
        variables: dict[str, int] = {}
        closures: dict[str, list] = {}
        unnamed: dict[int, tuple] = {}   # low pc -> (DIE, CU) of out-of-line copies
        for cu in cus:
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_subprogram":
                    continue
                n = die.attributes.get("DW_AT_name")
                if n is None and "DW_AT_low_pc" in die.attributes:
                    unnamed[die.attributes["DW_AT_low_pc"].value] = (die, cu)
                if n is not None and closure_copies.is_closure_of(name, n.value.decode(
                        errors="replace")):
                    closures[n.value.decode(errors="replace")] = closure_copies.captured(die)
                if n is None or n.value.decode(errors="replace") != name:
                    continue
                if "DW_AT_inline" in die.attributes:
                    abstract = die.offset
                    _collect_names(self, die, variables)
                elif "DW_AT_low_pc" in die.attributes:
                    concrete = self._scope(die, cu)
                    _collect_names(self, die, variables)
                elif "DW_AT_abstract_origin" in die.attributes:
                    # An out-of-line copy of an inlined function: names come from the origin.
                    concrete = self._scope(die, cu)
                    _collect_names(self, die, variables)
        if concrete is None and abstract is None:
            return None
        if concrete is None:
            # Inlined somewhere and also called out of line (through an interface, a func
            # value): the out-of-line body's DIE has no name, only its abstract origin;
            # it is the one at the function's entry.
            f = self.symtab.func_by_name(name)
            body = unnamed.get(f.entry) if f is not None else None
            if body is not None:
                concrete = self._scope(*body)
                _collect_names(self, body[0], variables)
        if concrete is not None and any(closures.values()):
            self._copies.update(closure_copies.copies(
                self.symtab, self._read_code, name, concrete.variables, closures))
        return FunctionInfo(name, concrete, abstract, variables)

    def _read_code(self, addr: int, n: int) -> bytes:
        """n bytes of the binary's code at a link-time address (KeyError outside .text)."""
        text = self.elf.get_section_by_name(".text")
        if text is None or not text["sh_addr"] <= addr <= addr + n <= text["sh_addr"] + \
                text["sh_size"]:
            raise KeyError(f"{addr:#x}+{n} is not in .text")
        with open(self.path, "rb") as f:
            f.seek(text["sh_offset"] + addr - text["sh_addr"])
            return f.read(n)

    def packages(self) -> list[str]:
        """The package paths the binary has compilation units for."""
        return [name for name in self._cu_map() if name]

    def package_variables(self, package: str) -> dict[str, dict[str, int]]:
        """Every function of the package's compilation units (bodies and inlined-only ones)
        -> its parameters and locals, name -> DIE offset of the type. For type rules
        (capture/typerules.py): which functions hold a variable of a type. Read once."""
        with self._lock:
            got = self._package_vars.get(package)
            if got is None:
                got = self._package_vars[package] = {}
                for cu in self._cu_map().get(package, []):
                    for die in cu.get_top_DIE().iter_children():
                        n = die.attributes.get("DW_AT_name") \
                            if die.tag == "DW_TAG_subprogram" else None
                        if n is None:   # an out-of-line copy: its origin has the names
                            continue
                        _collect_names(self, die, got.setdefault(
                            n.value.decode(errors="replace"), {}))
            return got

    def type_names(self) -> list[str]:
        """Every named type of the binary (the name index's keys)."""
        return list(self._indexes()[0])

    def concrete_scope(self, name: str) -> Scope | None:
        fn = self.function(name)
        return fn.concrete if fn else None

    def _scope(self, die, cu) -> Scope:
        """Reduce a subprogram / block / inlined-call DIE tree to a Scope tree."""
        variables: list[VarDIE] = []
        children: list[Scope] = []
        for c in die.iter_children():
            if c.tag in ("DW_TAG_formal_parameter", "DW_TAG_variable"):
                v = self._var(c)
                if v is not None:
                    variables.append(v)
            elif c.tag in ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine"):
                children.append(self._scope(c, cu))
        a = die.attributes
        origin = a["DW_AT_abstract_origin"].value if "DW_AT_abstract_origin" in a else None
        if origin is not None and die.tag == "DW_TAG_inlined_subroutine":
            origin = self._abs_ref(die, "DW_AT_abstract_origin")
        return Scope(die.tag, self._ranges(die, cu), variables, children, origin, cu.cu_offset)

    def _abs_ref(self, die, attr) -> int:
        return _ref(die, attr)

    def _var(self, die) -> VarDIE | None:
        a = die.attributes
        src = die
        if "DW_AT_abstract_origin" in a:
            src = self._die(self._abs_ref(die, "DW_AT_abstract_origin"))
        sa = src.attributes
        if "DW_AT_name" not in sa or "DW_AT_type" not in sa:
            return None
        return VarDIE(sa["DW_AT_name"].value.decode(errors="replace"),
                      self._abs_ref(src, "DW_AT_type"), a.get("DW_AT_location"),
                      die.tag == "DW_TAG_formal_parameter", die.offset)

    def _ranges(self, die, cu) -> list[tuple[int, int]]:
        a = die.attributes
        if "DW_AT_low_pc" in a and "DW_AT_high_pc" in a:
            lo = a["DW_AT_low_pc"].value
            hi = a["DW_AT_high_pc"]
            return [(lo, hi.value if hi.form == "DW_FORM_addr" else lo + hi.value)]
        if "DW_AT_ranges" in a:
            base = _cu_base(cu)
            out = []
            rl = self.dwarf.range_lists()
            if rl is None:
                return []
            for e in rl.get_range_list_at_offset(a["DW_AT_ranges"].value, cu=cu):
                if hasattr(e, "base_address") and not hasattr(e, "begin_offset"):
                    base = e.base_address
                elif e.is_absolute:
                    out.append((e.begin_offset, e.end_offset))
                else:
                    out.append((base + e.begin_offset, base + e.end_offset))
            return out
        return []

    # --- locations --------------------------------------------------------------------
    def location(self, var: VarDIE, cu_offset: int, pc: int, cfa: int) -> list[Piece] | None:
        """Where `var` lives at `pc` (already adjusted for call sites), as pieces; None
        when it is not live there."""
        expr = None
        for lo, hi, e in self.location_ranges(var, cu_offset):
            if lo <= pc < hi:
                expr = e
                break
        if not expr:
            return None
        return self.eval_location(expr, cfa)

    def location_ranges(self, var: VarDIE, cu_offset: int) -> list[tuple[int, int, list[int]]]:
        """The variable's location list as (lo, hi, expression); parsed once per DIE so
        that nothing is parsed while a target is paused (see FunctionInfo warm-up)."""
        key = var.die_offset or id(var)
        got = self._locranges.get(key)
        if got is None:
            # A copy first: where DWARF says "in a register" (until the call that passes
            # it returns) the copy is the one a parked frame still has.
            got = self._locranges[key] = self._copies.get(var.die_offset, []) + \
                self._parse_locations(var, cu_offset)
        return got

    def _parse_locations(self, var: VarDIE, cu_offset: int) -> list[tuple[int, int, list[int]]]:
        attr = var.location
        if attr is None:
            return []
        if attr.form in ("DW_FORM_exprloc", "DW_FORM_block1", "DW_FORM_block", "DW_FORM_block2",
                         "DW_FORM_block4"):
            return [(0, 1 << 64, list(attr.value))] if attr.value else []
        cu = self._cu_at(cu_offset)
        die = self._die(var.die_offset) if var.die_offset else None
        entries = self._loc_parser.parse_from_attribute(attr, cu["version"], die)
        base = _cu_base(cu)
        out = []
        for e in entries:
            if not hasattr(e, "loc_expr"):
                if hasattr(e, "base_address"):
                    base = e.base_address
                continue
            lo, hi = (e.begin_offset, e.end_offset) if e.is_absolute else \
                (base + e.begin_offset, base + e.end_offset)
            out.append((lo, hi, list(e.loc_expr)))
        return out

    def _cu_at(self, cu_offset: int):
        cu = self._cus_by_offset.get(cu_offset)
        if cu is None:
            cu = self._cus_by_offset[cu_offset] = self.dwarf.get_CU_at(cu_offset)
        return cu

    def warm_inliners(self, name: str) -> None:
        """Load, ahead of any pause, the bodies in the function's own package that inline
        it (cross-package inlining sites are loaded on first use). Once per function: a
        type rule plans a hundred functions at every snapshot."""
        if name in self._inliners_warm:
            return
        self._inliners_warm.add(name)
        fn = self.function(name)
        if fn is None or fn.abstract_offset is None:
            return
        for cu in self._cu_map().get(package_of(name), []):
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                    continue
                if _inlines(die, fn.abstract_offset):
                    n = die.attributes.get("DW_AT_name")
                    other = self.function(n.value.decode(errors="replace")) if n else None
                    if other is not None and other.concrete is not None:
                        self.warm_scope(other.concrete)

    def inlined_ranges(self, name: str) -> list[tuple[int, int]]:
        """The pc ranges where the function runs inlined into bodies of its own package
        (the ones warm_inliners loads; cross-package inlining is not listed)."""
        fn = self.function(name)
        if fn is None or fn.abstract_offset is None:
            return []
        out = []
        for cu in self._cu_map().get(package_of(name), []):
            for die in cu.get_top_DIE().iter_children():
                if die.tag != "DW_TAG_subprogram" or "DW_AT_low_pc" not in die.attributes:
                    continue
                if not _inlines(die, fn.abstract_offset):
                    continue
                n = die.attributes.get("DW_AT_name")
                other = self.function(n.value.decode(errors="replace")) if n else None
                if other is None or other.concrete is None:
                    continue
                for sc in iter_scopes(other.concrete):
                    if sc.tag == "DW_TAG_inlined_subroutine" and sc.origin == fn.abstract_offset:
                        out += sc.ranges
        return out

    def warm_scope(self, scope: Scope) -> None:
        """Parse every location list of a function body ahead of any pause."""
        for sc in iter_scopes(scope):
            for v in sc.variables:
                self.location_ranges(v, sc.cu_offset)

    def eval_location(self, expr: list[int], cfa: int) -> list[Piece]:
        return self._expr.evaluate(expr, cfa)

    def close(self) -> None:
        self._file.close()


_TYPE_TAGS = {"DW_TAG_base_type", "DW_TAG_pointer_type", "DW_TAG_structure_type",
              "DW_TAG_typedef", "DW_TAG_array_type", "DW_TAG_subroutine_type",
              "DW_TAG_unspecified_type"}


def _ref(die, attr) -> int:
    """A reference attribute as an absolute .debug_info offset."""
    v = die.attributes[attr]
    if v.form in ("DW_FORM_ref_addr", "DW_FORM_sec_offset", "DW_FORM_data4", "DW_FORM_data8"):
        return v.value
    return v.value + die.cu.cu_offset


def _base_kind(encoding: int, gk: int | None) -> str:
    if gk == GO_KIND_UINTPTR:
        return "uintptr"
    return {2: "bool", 4: "float", 3: "complex", 5: "int", 6: "int", 7: "uint", 8: "uint",
            0x10: "uint"}.get(encoding, "uint")


def _member_offset(a) -> int:
    v = a.get("DW_AT_data_member_location")
    if v is None:
        return 0
    return v.value if isinstance(v.value, int) else 0


def _array_count(die, t: GoType) -> int:
    for c in die.iter_children():
        if c.tag == "DW_TAG_subrange_type":
            ca = c.attributes
            if "DW_AT_count" in ca:
                return ca["DW_AT_count"].value
            if "DW_AT_upper_bound" in ca:
                return ca["DW_AT_upper_bound"].value + 1
    if t.elem is not None and t.elem.size:
        return t.size // t.elem.size
    return 0


def _cu_base(cu) -> int:
    top = cu.get_top_DIE()
    lo = top.attributes.get("DW_AT_low_pc")
    return lo.value if lo is not None else 0


def _collect_names(binfo: DebugInfo, die, out: dict[str, int]) -> None:
    for c in die.iter_children():
        if c.tag in ("DW_TAG_formal_parameter", "DW_TAG_variable"):
            v = binfo._var(c)
            if v is not None:
                out.setdefault(v.name, v.type_offset)
        elif c.tag == "DW_TAG_lexical_block":
            _collect_names(binfo, c, out)


def _inlines(die, origin: int) -> bool:
    for c in die.iter_children():
        if c.tag == "DW_TAG_inlined_subroutine" and "DW_AT_abstract_origin" in c.attributes \
                and _ref(c, "DW_AT_abstract_origin") == origin:
            return True
        if c.tag in ("DW_TAG_lexical_block", "DW_TAG_inlined_subroutine") and _inlines(c, origin):
            return True
    return False


def package_of(function: str) -> str:
    """Go's package path of a function symbol: `net/http.(*conn).serve` -> `net/http`."""
    slash = function.rfind("/")
    dot = function.find(".", slash + 1)
    return function[:dot] if dot > 0 else function


def iter_scopes(scope: Scope) -> Iterator[Scope]:
    yield scope
    for c in scope.children:
        yield from iter_scopes(c)

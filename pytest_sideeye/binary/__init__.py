"""Stage 1, binary analysis: what a Go executable tells us, with no process needed.

Takes a path; gives one `BinaryInfo` (`analyze(path)`): Go version and build id from the
build info and notes (elf), functions, file:line, inline trees and SP deltas from
`.gopclntab` (pclntab.Symtab), the runtime's struct layouts, status constants and wait
reasons from DWARF (layout.RuntimeLayout), and on first use the DWARF types, functions and
variable locations that capture needs (`BinaryInfo.debug`, dwarf.DebugInfo; location
expressions evaluated by dwarf_expr), and the names of its runtime type descriptors
(`has_runtime_type`: a type converted to an interface may have no DWARF). Cached on disk
by build id. `ReadOnlyData` reads a process's read-only segments (string literals) from
its executable file.
"""
from pytest_sideeye.binary.dwarf import (
                                         DebugInfo,
                                         Field,
                                         FunctionInfo,
                                         GoType,
                                         Scope,
                                         VarDIE,
                                         iter_scopes,
                                         package_of,
)
from pytest_sideeye.binary.dwarf_expr import Piece
from pytest_sideeye.binary.info import BinaryInfo, analyze
from pytest_sideeye.binary.layout import RuntimeLayout, table_layout, table_versions
from pytest_sideeye.binary.pclntab import SymFrame, Symtab
from pytest_sideeye.binary.readonly import ReadOnlyData
from pytest_sideeye.binary.typenames import has_runtime_type

__all__ = ["BinaryInfo", "DebugInfo", "Field", "FunctionInfo", "GoType", "Piece", "ReadOnlyData",
           "RuntimeLayout", "has_runtime_type", "Scope", "SymFrame", "Symtab", "VarDIE", "analyze", "iter_scopes",
           "package_of", "table_layout", "table_versions"]

"""The DWARF location-expression evaluator: where a variable lives in a frame, as pieces of
memory (or the reason it cannot be read), for the expressions Go's compiler emits.

Go's frame base is the CFA (DW_OP_call_frame_cfa), so DW_OP_fbreg N means CFA + N. A parked
goroutine's frames above the leaf have no saved registers (Go has no callee-saved ones), so
register locations are reported as unavailable rather than guessed.
"""
from __future__ import annotations

from dataclasses import dataclass

from elftools.dwarf.dwarf_expr import DWARFExprParser


@dataclass
class Piece:
    """One part of a variable's location: memory at `addr`, or unavailable (a register,
    or optimised away). size None means the whole variable."""
    kind: str            # "mem" or "unavailable"
    addr: int = 0
    size: int | None = None
    why: str = ""


class LocationEvaluator:
    """Evaluates location expressions; each distinct expression is parsed once."""

    def __init__(self, structs):
        self._parser = DWARFExprParser(structs)
        self._ops: dict[tuple[int, ...], list] = {}

    def evaluate(self, expr: list[int], cfa: int) -> list[Piece]:
        """Evaluate the location expressions Go emits (fbreg/call_frame_cfa/addr/piece/
        registers). Registers are "unavailable": a parked frame has no saved registers."""
        pieces: list[Piece] = []
        stack: list[int] = []
        reg: Piece | None = None
        key = tuple(expr)
        ops = self._ops.get(key)
        if ops is None:
            ops = self._ops[key] = [(op.op_name, op.args) for op in self._parser.parse_expr(expr)]
        for name, args in ops:
            if name == "DW_OP_call_frame_cfa":
                stack.append(cfa)
            elif name == "DW_OP_fbreg":
                stack.append(cfa + args[0])
            elif name == "DW_OP_addr":
                stack.append(args[0])
            elif name in ("DW_OP_consts", "DW_OP_constu") or name.startswith("DW_OP_const"):
                stack.append(args[0])
            elif name.startswith("DW_OP_lit"):
                stack.append(int(name[len("DW_OP_lit"):]))
            elif name == "DW_OP_plus_uconst" and stack:
                stack[-1] += args[0]
            elif name == "DW_OP_plus" and len(stack) >= 2:
                b = stack.pop()
                stack[-1] += b
            elif name == "DW_OP_minus" and len(stack) >= 2:
                b = stack.pop()
                stack[-1] -= b
            elif name.startswith("DW_OP_reg") or name == "DW_OP_regx":
                reg = Piece("unavailable", why="in a register")
            elif name.startswith("DW_OP_breg") or name == "DW_OP_bregx":
                reg = Piece("unavailable", why="relative to a register")
            elif name == "DW_OP_piece":
                size = args[0]
                if reg is not None:
                    reg.size = size
                    pieces.append(reg)
                elif stack:
                    pieces.append(Piece("mem", stack.pop(), size))
                else:
                    pieces.append(Piece("unavailable", size=size, why="optimised away"))
                reg = None
                stack.clear()
            elif name == "DW_OP_stack_value":
                reg = Piece("unavailable", why="a computed value")
            else:
                reg = Piece("unavailable", why=f"unsupported {name}")
        if not pieces:
            if reg is not None:
                pieces.append(reg)
            elif stack:
                pieces.append(Piece("mem", stack[-1]))
        return pieces

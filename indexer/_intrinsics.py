"""Low-level helpers for the Numba kernels: software prefetch and float16 conversions.

Numba has no float16 arithmetic on the CPU and no prefetch instruction, so both are written
as LLVM intrinsics: a prefetch is `llvm.prefetch`; float16 → float32 is `fpext half`, which
LLVM lowers to `vcvtph2ps` on x86 CPUs with F16C (and vectorises inside loops), and float32 →
float16 is `fptrunc` (`vcvtps2ph`, rounding to nearest even, as NumPy's `astype`).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, idx):
    """Prefetch (read, keep in all cache levels) the cache line of &arr[idx]; no bounds check."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], idxty, types.intp)
        ptr = builder.gep(ary.data, [i])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def f16_to_f32(typingctx, bits):
    """IEEE float16 given as the low 16 bits of an integer → float32 (exact)."""
    if not isinstance(bits, types.Integer):
        return None
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        i16 = ir.IntType(16)
        width = signature.args[0].bitwidth
        low = builder.trunc(args[0], i16) if width > 16 else args[0]
        return builder.fpext(builder.bitcast(low, ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def f32_bits_to_f16(typingctx, bits):
    """The float32 whose bits are the uint32 `bits` → IEEE float16 bits (round to nearest,
    ties to even, as `np.float32.astype(np.float16)`), as a uint32."""
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 32):
        return None
    sig = types.uint32(bits)

    def codegen(context, builder, signature, args):
        value = builder.bitcast(args[0], ir.FloatType())
        half = builder.fptrunc(value, ir.HalfType())
        return builder.zext(builder.bitcast(half, ir.IntType(16)), ir.IntType(32))

    return sig, codegen

#include <string.h>
#include <stdint.h>
#include <limits.h>

#ifdef __wasm_simd128__
#include <wasm_simd128.h>
#endif

#define ALIGN (sizeof(size_t))
#define ONES ((size_t)-1/UCHAR_MAX)
#define HIGHS (ONES * (UCHAR_MAX/2+1))
#define HASZERO(x) ((x)-ONES & ~(x) & HIGHS)

size_t strlen(const char *s)
{
#if defined(__wasm_simd128__) && defined(__wasilibc_simd_string)
	// pynbox: upstream skips Clang 19 and 20 here (an internal compiler
	// error on inline assembly with a vector result, llvm/llvm-project#146574);
	// the loads below are plain wasm_v128_load instead (README).
	#if 1
	// Aligned 16-byte loads may read before or after the object, but never
	// across a 64 KiB wasm page, so never outside linear memory. (Upstream
	// hides the load in inline assembly because such a read is undefined
	// in C; this file is compiled alone, without LTO, see README.)
	uintptr_t align = (uintptr_t)s % sizeof(v128_t);
	uintptr_t addr = (uintptr_t)s - align;

	for (;;) {
		v128_t v;
		v = wasm_v128_load((const void *)(addr));
		// Bitmask is slow on AArch64, all_true is much faster.
		if (!wasm_i8x16_all_true(v)) {
			const v128_t cmp = wasm_i8x16_eq(v, (v128_t){});
			// Clear the bits corresponding to align (little-endian)
			// so we can count trailing zeros.
			int mask = wasm_i8x16_bitmask(cmp) >> align << align;
			// At least one bit will be set, unless align cleared them.
			// Knowing this helps the compiler if it unrolls the loop.
			__builtin_assume(mask || align);
			// If the mask became zero because of align,
			// it's as if we didn't find anything.
			if (mask) {
				// Find the offset of the first one bit (little-endian).
				return addr - (uintptr_t)s + __builtin_ctz(mask);
			}
		}
		align = 0;
		addr += sizeof(v128_t);
	}
#endif
#endif

	const char *a = s;
#ifdef __GNUC__
	typedef size_t __attribute__((__may_alias__)) word;
	const word *w;
	for (; (uintptr_t)s % ALIGN; s++) if (!*s) return s-a;
	for (w = (const void *)s; !HASZERO(*w); w++);
	s = (const void *)w;
#endif
	for (; *s; s++);
	return s-a;
}

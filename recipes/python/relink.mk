# Relinking the wasm interpreter outside `make`, with the exact variables of
# the CPython build that produced it. Used with the build's own Makefile:
#
#   make -s -C "$PYBUILD" -f Makefile -f "$PYWORK/relink.mk" pynbox-relink \
#       PYNBOX_WASM=/abs/out.wasm \
#       PYNBOX_MAIN_OBJ=/abs/main.o           # default: Programs/python.o
#       PYNBOX_EXTRA_LINK="/abs/ext1.o /abs/libfoo.a -lbar"
#
#   make -s -C "$PYBUILD" -f Makefile -f "$PYWORK/relink.mk" pynbox-print-PY_CORE_CFLAGS
#       prints a Makefile variable (here the flags to compile C code that
#       includes Python.h the way the interpreter itself was compiled; use
#       PY_STDMODULE_CFLAGS for extension modules). Their -I paths are
#       relative to the build directory: run the compiler there, with
#       $(make ... pynbox-print-CC).
#
# The targets have no prerequisites on purpose: they never rebuild anything
# in the cached build tree, which other recipes share.
PYNBOX_MAIN_OBJ ?= Programs/python.o
PYNBOX_EXTRA_LINK ?=

.PHONY: pynbox-relink
pynbox-relink:
	$(LINKCC) $(PY_CORE_LDFLAGS) $(LINKFORSHARED) -o $(PYNBOX_WASM) $(PYNBOX_MAIN_OBJ) $(PYNBOX_EXTRA_LINK) $(LINK_PYTHON_OBJS) $(LIBS) $(MODLIBS) $(SYSLIBS)

pynbox-print-%:
	@echo '$($*)'

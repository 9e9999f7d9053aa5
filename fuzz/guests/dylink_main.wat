;; The smallest main module the dynamic linker (src/native/) can load a
;; side module into: it exports what a side module imports (memory, a
;; growable table, the stack pointer, an allocator, one function and one
;; data symbol), opens /d/m.so, asks the host to load it and exits 0 if it
;; was loaded, 1 if it was refused. Used by the
;; `dylink` fuzz target (src/fuzzing.rs); dylink_main.wasm is this file
;; compiled (a unit test checks that they agree).
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "pynbox" "dl_open" (func $dl_open (param i32 i32) (result i32)))
  (import "pynbox" "dl_sym" (func $dl_sym (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (table (export "__indirect_function_table") 2 funcref)
  (global (export "__stack_pointer") (mut i32) (i32.const 65536))
  (global (export "main_data") i32 (i32.const 1024))
  (global $brk (mut i32) (i32.const 70000))
  (elem (i32.const 1) $main_func)
  (data (i32.const 16) "d/m.so")
  (data (i32.const 32) "f")
  (func $main_func (export "main_func") (param i32) (result i32) (local.get 0))
  ;; A bump allocator that grows memory as needed; 0 when it cannot.
  (func (export "pynbox_dl_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32) (local $end i64) (local $have i64)
    (local.set $p
      (i32.and
        (i32.add (global.get $brk) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i64.add (i64.extend_i32_u (local.get $p)) (i64.extend_i32_u (local.get $size))))
    (local.set $have (i64.mul (i64.extend_i32_u (memory.size)) (i64.const 65536)))
    (if (i64.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq
              (memory.grow (i32.wrap_i64
                (i64.add (i64.shr_u (i64.sub (local.get $end) (local.get $have)) (i64.const 16)) (i64.const 1))))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $brk (i32.wrap_i64 (local.get $end)))
    (local.get $p))
  (func (export "_start")
    (local $h i32)
    ;; path_open(root preopen 3, no flags, "d/m.so", read, &fd at 100)
    (if (i32.ne
          (call $path_open (i32.const 3) (i32.const 0) (i32.const 16) (i32.const 6) (i32.const 0)
            (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 100))
          (i32.const 0))
      (then (unreachable)))
    (local.set $h (call $dl_open (i32.load (i32.const 100)) (i32.const 0)))
    (if (local.get $h)
      (then (drop (call $dl_sym (local.get $h) (i32.const 32) (i32.const 1)))))
    ;; Exit status 0: loaded; 1: refused.
    (call $proc_exit (i32.eqz (local.get $h)))))

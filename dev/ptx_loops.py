#!/usr/bin/env python3
"""Instructions per iteration of a kernel's innermost loops, from its PTX: the instruction-count
measure of a kernel's per-element cost that needs no GPU.

    python3 dev/ptx_loops.py PTX_OR_CU KERNEL

PTX_OR_CU is a .ptx file (build.rs writes OUT_DIR/compute_90.ptx) or a concatenated program
(build.rs's OUT_DIR/program.cu, e.g. of an older commit), which is compiled here with NVRTC for
compute_90 with the project's options (libnvrtc.so.13 must be on LD_LIBRARY_PATH, as after
`bash .ci/run`). For every innermost loop it prints the instructions of its fast path (a branch
forward within the loop skips its block: the rare renormalisation, say) and the loads, so that
instructions per element = fast path / elements per iteration (the unroll, read off the loads).
"""
import ctypes
import re
import sys


def compile_ptx(path):
    lib = ctypes.CDLL("libnvrtc.so.13")
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"program.cu", 0, None, None) == 0
    opts = [b"--gpu-architecture=compute_90", b"--fmad=false", b"--std=c++17"]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    n = ctypes.c_size_t()
    if rc != 0:
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetProgramLog(prog, log)
        sys.exit(log.value.decode())
    lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
    ptx = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetPTX(prog, ptx)
    return ptx.value.decode()


def kernel_lines(ptx, name):
    start = ptx.index(".entry %s(" % name)
    end = ptx.find(".entry", start + 10)
    return ptx[start : end if end > 0 else len(ptx)].split("\n")


def is_instruction(line):
    s = line.strip()
    return s.endswith(";") and not s.startswith("//") and not s.startswith(".")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, kernel = sys.argv[1], sys.argv[2]
    ptx = compile_ptx(path) if path.endswith(".cu") else open(path).read()
    lines = kernel_lines(ptx, kernel)
    labels = {}
    for i, line in enumerate(lines):
        m = re.match(r"^(\$L__\w+):", line.strip())
        if m:
            labels[m.group(1)] = i
    loops = []
    for j, line in enumerate(lines):
        m = re.search(r"bra(?:\.uni)?\s+(\$L__\w+);", line)
        if m and m.group(1) in labels and labels[m.group(1)] < j:
            loops.append((labels[m.group(1)], j))
    for i, j in sorted(loops):
        if any(a > i and b < j for a, b in loops if (a, b) != (i, j)):
            continue  # not innermost
        skipped = set()
        for k in range(i, j):
            m = re.match(r"@!?%p\d+ bra\s+(\$L__\w+);", lines[k].strip())
            if m and k < labels.get(m.group(1), -1) <= j:
                skipped.update(range(k + 1, labels[m.group(1)]))
        body = [lines[k].strip() for k in range(i, j + 1) if is_instruction(lines[k]) and k not in skipped]
        count = lambda s: sum(s in b for b in body)
        print(f"{kernel} loop at PTX line {i}: fast path {len(body)} instructions; "
              f"{count('ld.global')} global and {count('ld.shared')} shared loads, {count('mul.rn.f32')} f32 multiplies, {count('div.')} divisions")


if __name__ == "__main__":
    main()

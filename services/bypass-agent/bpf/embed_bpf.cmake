# Turns the compiled BPF object into a C array (bypass_dp_obj.c) so that the library carries
# its data plane inside the binary. Run with cmake -DIN=<obj> -DOUT=<c file> -P embed_bpf.cmake.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
if(len EQUAL 0)
  message(FATAL_ERROR "embed_bpf: ${IN} is empty (the clang step failed?)")
endif()
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
file(WRITE "${OUT}.tmp"
  "/* Generated from ${IN} by embed_bpf.cmake: do not edit. */\n"
  "#include <stddef.h>\n"
  "const unsigned char bypass_dp_bpf_obj[] __attribute__ ((aligned (8))) = {\n${body}\n};\n"
  "const size_t bypass_dp_bpf_obj_len = ${len};\n")
file(RENAME "${OUT}.tmp" "${OUT}")

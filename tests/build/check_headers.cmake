# cmake -P check_headers.cmake: compile every public header alone, as C and as C++.
#
# Inputs (-D): RAG_SOURCE_DIR, RAG_C_COMPILER, RAG_CXX_COMPILER, RAG_C_FLAGS, RAG_CXX_FLAGS
# (lists), RAG_WORK_DIR (scratch directory for the generated translation units).
#
# The build already compiles the same translation units (targets rag_header_test_c/_cxx); this
# test globs again at test time so a header added since the last configure is checked too, and
# it reports every failing header instead of stopping at the first.
foreach(v RAG_SOURCE_DIR RAG_C_COMPILER RAG_CXX_COMPILER RAG_WORK_DIR)
  if(NOT ${v})
    message(FATAL_ERROR "check_headers.cmake: ${v} not set")
  endif()
endforeach()

set(include_dir ${RAG_SOURCE_DIR}/include)
file(GLOB_RECURSE headers RELATIVE ${include_dir} ${include_dir}/ragcore/*.h)
list(SORT headers)
if(NOT headers)
  message(FATAL_ERROR "no public headers found under ${include_dir}/ragcore")
endif()

file(REMOVE_RECURSE ${RAG_WORK_DIR})
file(MAKE_DIRECTORY ${RAG_WORK_DIR})

set(failures 0)
set(checked 0)
foreach(header ${headers})
  string(MAKE_C_IDENTIFIER ${header} id)
  # A header declaring functions must give them C linkage for C++ consumers; compiling alone
  # cannot see a missing extern "C" (it only shows up as a link error in a C++ program).
  file(READ ${include_dir}/${header} text)
  if(text MATCHES "RAG_API[ \t]+[A-Za-z_]" AND NOT text MATCHES "extern \"C\"")
    math(EXPR failures "${failures} + 1")
    message("FAIL ${header}: declares RAG_API functions without an extern \"C\" block")
  endif()
  set(body "#include <${header}>\n#include <${header}>\ntypedef int rag_header_test_${id};\n")
  foreach(lang C CXX)
    if(lang STREQUAL "C")
      set(tu ${RAG_WORK_DIR}/${id}.c)
      set(compiler ${RAG_C_COMPILER})
      set(flags ${RAG_C_FLAGS})
    else()
      set(tu ${RAG_WORK_DIR}/${id}.cpp)
      set(compiler ${RAG_CXX_COMPILER})
      set(flags ${RAG_CXX_FLAGS})
    endif()
    file(WRITE ${tu} "${body}")
    execute_process(
      COMMAND ${compiler} ${flags} -fsyntax-only -I${include_dir} ${tu}
      RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    math(EXPR checked "${checked} + 1")
    if(NOT rc EQUAL 0)
      math(EXPR failures "${failures} + 1")
      list(JOIN flags " " flags_text)
      message("FAIL ${header} (${lang}: ${compiler} ${flags_text}):\n${out}")
    else()
      message("ok   ${header} (${lang})")
    endif()
  endforeach()
endforeach()

if(failures GREATER 0)
  message(FATAL_ERROR "${failures} header check(s) failed (${checked} compilations run)")
endif()
message("all ${checked} header compilations passed")

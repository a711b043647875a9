# cmake -P check_boundaries.cmake: module private headers are compile errors outside their module.
#
# Inputs (-D): RAG_SOURCE_DIR, RAG_C_COMPILER, RAG_CXX_COMPILER, RAG_PROBE (boundary_violation.c),
# RAG_CONTEXT (generated boundary_context.cmake: RAG_MODULES, RAG_TOP_DEFINITIONS and, per
# module m, RAG_CTX_<m>_INCLUDES / RAG_CTX_<m>_DEFINES taken from target rag_<m>).
#
# For every private header src/<X>/*.h (not api/) of every module X:
#   - negative: for every other module Y, compiling the probe with Y's define and include
#     directories must FAIL, and its diagnostics must show the "private header of the" #error
#     (so it fails because of the guard, not because of some unrelated error);
#   - positive control: compiling the probe with X's own define and include directories must
#     succeed (as C, or as C++ for a header that only C++ units of X use).
foreach(v RAG_SOURCE_DIR RAG_C_COMPILER RAG_CXX_COMPILER RAG_PROBE RAG_CONTEXT)
  if(NOT ${v})
    message(FATAL_ERROR "check_boundaries.cmake: ${v} not set")
  endif()
endforeach()
include(${RAG_CONTEXT})

get_filename_component(probe_dir ${RAG_PROBE} DIRECTORY)

# compile(<result-var> <output-var> <lang> <module>): 0 on success.
function(compile result_var output_var lang module header_rel)
  string(TOUPPER ${module} upper)
  set(args -fsyntax-only)
  foreach(d ${RAG_TOP_DEFINITIONS})
    list(APPEND args -D${d})
  endforeach()
  foreach(d ${RAG_CTX_${module}_DEFINES})
    list(APPEND args -D${d})
  endforeach()
  list(APPEND args -DRAG_MODULE_${upper}=1)
  foreach(i ${RAG_CTX_${module}_INCLUDES})
    list(APPEND args -I${i})
  endforeach()
  list(APPEND args "-DRAG_VIOLATION_HEADER=\"${header_rel}\"")
  if(lang STREQUAL "C")
    set(cmd ${RAG_C_COMPILER} -std=c11 ${args} ${RAG_PROBE})
  else()
    set(cmd ${RAG_CXX_COMPILER} -std=c++17 -x c++ ${args} ${RAG_PROBE})
  endif()
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  set(${result_var} ${rc} PARENT_SCOPE)
  set(${output_var} "${out}" PARENT_SCOPE)
endfunction()

set(failures 0)
set(headers_checked 0)
set(compiles 0)
foreach(owner ${RAG_MODULES})
  file(GLOB headers ${RAG_SOURCE_DIR}/src/${owner}/*.h)
  list(SORT headers)
  foreach(header ${headers})
    file(RELATIVE_PATH header_rel ${probe_dir} ${header})
    math(EXPR headers_checked "${headers_checked} + 1")
    set(failures_before ${failures})

    # Positive control: the owner's own context.
    compile(rc out C ${owner} ${header_rel})
    math(EXPR compiles "${compiles} + 1")
    if(NOT rc EQUAL 0)
      compile(rc out_cxx CXX ${owner} ${header_rel})
      math(EXPR compiles "${compiles} + 1")
    endif()
    if(NOT rc EQUAL 0)
      math(EXPR failures "${failures} + 1")
      message("FAIL ${header_rel}: does not compile even in its own module ${owner} "
              "(RAG_MODULE_ defined, ${owner}'s include directories):\n${out}")
    endif()

    # Negative: every other module's context.
    foreach(intruder ${RAG_MODULES})
      if(intruder STREQUAL owner)
        continue()
      endif()
      compile(rc out C ${intruder} ${header_rel})
      math(EXPR compiles "${compiles} + 1")
      if(rc EQUAL 0)
        math(EXPR failures "${failures} + 1")
        message("FAIL ${header_rel}: compiled inside module ${intruder} -- the private header "
                "has no working '#ifndef RAG_MODULE_<X> / #error' guard")
      elseif(NOT out MATCHES "private header of the")
        math(EXPR failures "${failures} + 1")
        message("FAIL ${header_rel}: failed inside module ${intruder}, but not because of the "
                "private-header guard:\n${out}")
      endif()
    endforeach()
    if(failures EQUAL failures_before)
      message("ok   ${header_rel}: refused by every other module, accepted by ${owner}")
    endif()
  endforeach()
endforeach()

if(headers_checked EQUAL 0)
  message(FATAL_ERROR "no private module headers found under src/{${RAG_MODULES}}/*.h: "
                      "nothing proves the boundary")
endif()
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} boundary check(s) failed (${headers_checked} headers, ${compiles} compilations)")
endif()
message("module boundaries hold: ${headers_checked} private headers, ${compiles} compilations")

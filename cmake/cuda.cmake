# The CUDA embedding provider (backends/embed-cuda), included from the top-level CMakeLists.txt.
#
# RAG_WITH_CUDA: auto (build it when a CUDA compiler is found), on (required), off.
# Sanitizer and fuzz builds force it off: nvcc-compiled objects and ASan/UBSan/libFuzzer
# instrumentation do not mix well, and those builds run where there is no GPU anyway.
#
# Sets for the caller:
#   RAG_CUDA_OBJECT_TARGETS  the OBJECT library that goes into librag.so / librag.a
#   RAG_CUDA_LINK_DEPS       the static CUDA runtime (+ dl, rt), so that librag.so needs no
#                            libcudart.so at run time (libcuda.so.1, the driver, is dlopen'ed by
#                            the runtime when a device is first asked for)
#   RAG_HAVE_CUDA            ON when the real provider is built

string(TOLOWER "${RAG_WITH_CUDA}" _rag_cuda_mode)
if(NOT _rag_cuda_mode MATCHES "^(auto|on|off)$")
  message(FATAL_ERROR "RAG_WITH_CUDA must be auto, on or off (got \"${RAG_WITH_CUDA}\")")
endif()
set(_rag_cuda_why "")
if(_rag_cuda_mode STREQUAL "off")
  set(_rag_cuda_why "RAG_WITH_CUDA=off")
elseif(RAG_SANITIZE OR RAG_FUZZ)
  if(_rag_cuda_mode STREQUAL "on")
    message(WARNING "RAG_WITH_CUDA=on ignored: sanitizer/fuzz builds are built without CUDA")
  endif()
  set(_rag_cuda_mode "off")
  set(_rag_cuda_why "sanitizer/fuzz build")
endif()

set(RAG_HAVE_CUDA OFF)
if(NOT _rag_cuda_mode STREQUAL "off")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # Two architectures keep the .cu compile short: sm_80 (A100) and sm_90 (H100/H200);
    # newer GPUs run the sm_90 PTX through the driver's JIT.  The user's choice wins.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
      set(CMAKE_CUDA_ARCHITECTURES "80;90")
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(RAG_HAVE_CUDA ON)
  elseif(_rag_cuda_mode STREQUAL "on")
    message(FATAL_ERROR "RAG_WITH_CUDA=on but no CUDA compiler was found (set CMAKE_CUDA_COMPILER "
                        "or put nvcc on PATH)")
  else()
    set(_rag_cuda_why "no CUDA compiler found")
  endif()
endif()

if(RAG_HAVE_CUDA)
  add_library(rag_backend_embed_cuda OBJECT ${CMAKE_CURRENT_SOURCE_DIR}/backends/embed-cuda/embed_cuda.cu)
  # The public headers and nothing else: proves the provider depends on embed_cuda.h /
  # embed_provider.h alone, as the device kit (bench/cuda) needs.
  target_include_directories(rag_backend_embed_cuda PRIVATE ${RAG_PUBLIC_INCLUDE})
  set_target_properties(rag_backend_embed_cuda PROPERTIES
    CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
    CUDA_VISIBILITY_PRESET hidden POSITION_INDEPENDENT_CODE ON
    CUDA_RUNTIME_LIBRARY Static)
  # The top-level add_compile_options() (-Wall -Wextra ...) are gcc flags that nvcc rejects:
  # drop the inherited list and hand the warnings to nvcc's host pass instead.
  set_property(TARGET rag_backend_embed_cuda PROPERTY COMPILE_OPTIONS "")
  target_compile_options(rag_backend_embed_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter>)
  set(RAG_CUDA_OBJECT_TARGETS rag_backend_embed_cuda)
  set(RAG_CUDA_LINK_DEPS CUDA::cudart_static ${CMAKE_DL_LIBS})
  find_library(RAG_RT_LIBRARY rt)
  if(RAG_RT_LIBRARY)
    list(APPEND RAG_CUDA_LINK_DEPS ${RAG_RT_LIBRARY})
  endif()
  message(STATUS "CUDA embedding provider: built with ${CMAKE_CUDA_COMPILER} "
                 "${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES}, "
                 "static CUDA runtime")
else()
  add_library(rag_backend_embed_cuda OBJECT
              ${CMAKE_CURRENT_SOURCE_DIR}/backends/embed-cuda/embed_cuda_absent.c)
  target_link_libraries(rag_backend_embed_cuda PUBLIC rag_common)
  set(RAG_CUDA_OBJECT_TARGETS rag_backend_embed_cuda)
  set(RAG_CUDA_LINK_DEPS)
  message(STATUS "CUDA embedding provider: not built (${_rag_cuda_why}); "
                 "rag_embed_cuda_init() returns RAG_EUNSUPPORTED")
endif()

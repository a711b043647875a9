# The NATS JetStream queue transport (backends/queue-nats), included from the top-level
# CMakeLists.txt.
#
# RAG_WITH_NATS: auto (build it when libnats is found), on (required), off.
# Without libnats, backends/queue-nats/queue_nats_absent.c provides rag_queue_nats_new(), which
# reports RAG_EUNSUPPORTED, so the public API is the same in every build.
#
# Sets for the caller:
#   RAG_NATS_OBJECT_TARGETS  the OBJECT library that goes into librag.so / librag.a
#   RAG_NATS_LINK_DEPS       libnats (Debian ships only the shared library, no libnats.a)
#   RAG_PC_NATS_LIBS         "-lnats" when built (Libs.private of ragcore.pc), else empty
#   RAG_HAVE_NATS            ON when the real transport is built

string(TOLOWER "${RAG_WITH_NATS}" _rag_nats_mode)
if(NOT _rag_nats_mode MATCHES "^(auto|on|off)$")
  message(FATAL_ERROR "RAG_WITH_NATS must be auto, on or off (got \"${RAG_WITH_NATS}\")")
endif()

set(RAG_HAVE_NATS OFF)
set(_rag_nats_why "RAG_WITH_NATS=off")
set(_rag_nats_link)
if(NOT _rag_nats_mode STREQUAL "off")
  # Debian's libnats-dev ships libnats.pc; fall back to a plain search for other layouts.
  pkg_check_modules(LIBNATS QUIET IMPORTED_TARGET libnats)
  if(LIBNATS_FOUND)
    set(_rag_nats_link PkgConfig::LIBNATS)
    set(_rag_nats_desc "libnats ${LIBNATS_VERSION} (pkg-config)")
    set(RAG_HAVE_NATS ON)
  else()
    find_path(RAG_NATS_INCLUDE_DIR nats/nats.h)
    find_library(RAG_NATS_LIBRARY nats)
    if(RAG_NATS_INCLUDE_DIR AND RAG_NATS_LIBRARY)
      add_library(rag_libnats INTERFACE IMPORTED)
      set_target_properties(rag_libnats PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${RAG_NATS_INCLUDE_DIR}"
        INTERFACE_LINK_LIBRARIES "${RAG_NATS_LIBRARY}")
      set(_rag_nats_link rag_libnats)
      set(_rag_nats_desc "${RAG_NATS_LIBRARY}")
      set(RAG_HAVE_NATS ON)
    endif()
  endif()
  if(NOT RAG_HAVE_NATS)
    if(_rag_nats_mode STREQUAL "on")
      message(FATAL_ERROR "RAG_WITH_NATS=on but libnats was not found (Debian: libnats-dev)")
    endif()
    set(_rag_nats_why "libnats not found")
  endif()
endif()

if(RAG_HAVE_NATS)
  add_library(rag_backend_queue_nats OBJECT
              ${CMAKE_CURRENT_SOURCE_DIR}/backends/queue-nats/queue_nats.c)
  target_link_libraries(rag_backend_queue_nats PUBLIC rag_common ${_rag_nats_link})
  set(RAG_NATS_LINK_DEPS ${_rag_nats_link})
  set(RAG_PC_NATS_LIBS "-lnats")
  message(STATUS "NATS JetStream transport: built with ${_rag_nats_desc}")
else()
  add_library(rag_backend_queue_nats OBJECT
              ${CMAKE_CURRENT_SOURCE_DIR}/backends/queue-nats/queue_nats_absent.c)
  target_link_libraries(rag_backend_queue_nats PUBLIC rag_common)
  set(RAG_NATS_LINK_DEPS)
  set(RAG_PC_NATS_LIBS "")
  message(STATUS "NATS JetStream transport: not built (${_rag_nats_why}); "
                 "rag_queue_nats_new() returns RAG_EUNSUPPORTED")
endif()
target_include_directories(rag_backend_queue_nats PRIVATE
                           ${CMAKE_CURRENT_SOURCE_DIR}/backends/queue-nats)
target_compile_definitions(rag_backend_queue_nats PRIVATE RAG_BACKEND_QUEUE_NATS=1)
set(RAG_NATS_OBJECT_TARGETS rag_backend_queue_nats)

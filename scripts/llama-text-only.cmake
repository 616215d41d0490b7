# Included by llama.cpp's own CMakeLists.txt right after its project() call
# (-DCMAKE_PROJECT_llama.cpp_INCLUDE=<this file>, set by scripts/setup.sh and the Dockerfile).
#
# llama-cpp-python loads libllama and ggml only, but its CMakeLists forces llama.cpp's
# `common` library on (a cache variable set with FORCE, which -DLLAMA_BUILD_COMMON=OFF
# cannot undo), and with it cpp-httplib, the chat parsers and the Jinja engine: about
# half of the build. A normal variable set here, in llama.cpp's scope, comes before the
# cache and leaves them out. Nothing minionflow runs changes: same libllama, same replies.
set(LLAMA_BUILD_COMMON OFF)

# Turns recipes/*.json into a C++ include of {name, text} pairs, so the qforge binary carries its
# built-in recipes (src/quant/recipe.cpp includes the output). Run as a script:
#   cmake -DOUTPUT=<file.inc> -DINPUTS="<a.json>;<b.json>" -P embed_recipes.cmake
# Each text becomes a raw string literal; a recipe containing the delimiter is rejected.
set(_delimiter "qf_recipe_json")
set(_out "// Generated from recipes/*.json by cmake/embed_recipes.cmake: do not edit.\n")
foreach(_file IN LISTS INPUTS)
  get_filename_component(_name "${_file}" NAME_WE)
  file(READ "${_file}" _text)
  string(FIND "${_text}" ")${_delimiter}\"" _clash)
  if(NOT _clash EQUAL -1)
    message(FATAL_ERROR "${_file} contains the raw-string delimiter )${_delimiter}\"")
  endif()
  string(APPEND _out "{\"${_name}\", R\"${_delimiter}(${_text})${_delimiter}\"},\n")
endforeach()
# Only touch the output when it changes, so unrelated rebuilds do not recompile recipe.cpp.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" _old)
  if(_old STREQUAL _out)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${_out}")

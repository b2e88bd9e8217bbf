// Where qforge finds what a command omits: the default model and the shared evaluation data.
#pragma once

#include <string>

namespace qf {

// File name of the default model, as scripts/setup.sh places it in the models folder.
inline constexpr const char* kDefaultModelFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

// $QF_MODEL, else <models dir>/<kDefaultModelFile>, where the models dir is $QF_MODELS_DIR or
// the repository's models/ folder. Throws qf::Error telling how to fetch it when absent.
std::string default_model_path();

// $QF_SHARED_DIR/data/<name>, else the build's ../shared/data/<name>. Throws if absent.
std::string shared_data_file(const std::string& name);

}  // namespace qf

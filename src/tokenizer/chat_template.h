// Chat templates without Jinja: the model's Jinja text is only read to recognize its family by
// distinctive substrings (as llama.cpp's llm_chat_detect_template does), and each family is
// rendered by C++ code that produces what llama.cpp's llm_chat_apply_template produces.
// ChatML templates that open with a fixed system message when the conversation has none
// (SmolLM2's "You are a helpful AI assistant named SmolLM, trained by Hugging Face", Qwen2.5's)
// get it too, as their Jinja does.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace qf {

enum class ChatFormat {
  ChatML,          // <|im_start|>role\n...<|im_end|>\n  (SmolLM2, Qwen2)
  Llama2,          // [INST] ... [/INST], system message folded into the first turn
  Llama2Sys,       // with <<SYS>>\n...\n<</SYS>>\n\n
  Llama2SysBos,    // and <s> before each later [INST]
  Llama2SysStrip,  // and messages stripped of surrounding whitespace
  MistralV1,       // " [INST] ... [/INST]"
  MistralV3,       // "[INST] ... [/INST]", assistant replies stripped
  MistralV3Tekken, // "[INST]...[/INST]"
  MistralV7,       // [SYSTEM_PROMPT] ... [/SYSTEM_PROMPT][INST] ... [/INST]
  Llama3,          // <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
  Phi3,            // <|role|>\n...<|end|>\n
  Zephyr,          // <|role|>\n...<|endoftext|>\n
  Gemma,           // <start_of_turn>role\n...<end_of_turn>\n, "model" for the assistant
};

class ChatTemplate {
 public:
  // From a model's Jinja template, or from a family name ("chatml", "llama3", "mistral-v7",
  // ... llama.cpp's names). Empty or unrecognized text gives ChatML and a warning().
  static ChatTemplate detect(std::string_view jinja_or_name);

  ChatFormat format() const { return format_; }
  const char* name() const;  // llama.cpp's name of the family
  // The system message a ChatML template adds when the first message is not one ("" if none).
  const std::string& default_system_prompt() const { return default_system_; }
  // Non-empty when the template was not recognized (the caller may print it).
  const std::string& warning() const { return warning_; }

  // The conversation as the model expects it; with add_generation_prompt, ends with the header
  // of the assistant's reply where the family has one.
  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  // Every family name detect() accepts.
  static std::vector<std::string> names();

 private:
  ChatFormat format_ = ChatFormat::ChatML;
  std::string default_system_;
  std::string warning_;
};

}  // namespace qf

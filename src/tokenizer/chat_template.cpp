#include "tokenizer/chat_template.h"

#include <cctype>
#include <utility>

#include "core/error.h"

namespace qf {

namespace {

struct NamedFormat {
  const char* name;
  ChatFormat format;
};
constexpr NamedFormat kNames[] = {
    {"chatml", ChatFormat::ChatML},           {"llama2", ChatFormat::Llama2},
    {"llama2-sys", ChatFormat::Llama2Sys},     {"llama2-sys-bos", ChatFormat::Llama2SysBos},
    {"llama2-sys-strip", ChatFormat::Llama2SysStrip}, {"mistral-v1", ChatFormat::MistralV1},
    {"mistral-v3", ChatFormat::MistralV3},     {"mistral-v3-tekken", ChatFormat::MistralV3Tekken},
    {"mistral-v7", ChatFormat::MistralV7},     {"llama3", ChatFormat::Llama3},
    {"phi3", ChatFormat::Phi3},                {"zephyr", ChatFormat::Zephyr},
    {"gemma", ChatFormat::Gemma},
};

// Whitespace as C's isspace in the "C" locale, which is what llama.cpp trims.
std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// The fixed system message of a ChatML template, if it has one: the first
// "<|im_start|>system" + newline + literal text + "<|im_end|>" in the Jinja source whose text
// is plain (no quote, no Jinja expression; "\n" escapes allowed). SmolLM2 writes
//   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a
//   helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}
// while the branch that renders a given system message concatenates an expression instead.
std::string find_default_system_prompt(std::string_view jinja) {
  constexpr std::string_view kOpen = "<|im_start|>system";
  constexpr std::string_view kClose = "<|im_end|>";
  for (size_t at = jinja.find(kOpen); at != std::string_view::npos; at = jinja.find(kOpen, at + 1)) {
    size_t p = at + kOpen.size();
    if (jinja.compare(p, 1, "\n") == 0) {
      p += 1;
    } else if (jinja.compare(p, 2, "\\n") == 0) {
      p += 2;
    } else {
      continue;
    }
    const size_t end = jinja.find(kClose, p);
    if (end == std::string_view::npos) break;
    const std::string_view body = jinja.substr(p, end - p);
    if (body.empty() || body.find_first_of("'\"{}+") != std::string_view::npos) continue;
    std::string text;
    for (size_t i = 0; i < body.size(); ++i) {
      if (body[i] == '\\' && i + 1 < body.size() && body[i + 1] == 'n') {
        text += '\n';
        ++i;
      } else {
        text += body[i];
      }
    }
    return text;
  }
  return {};
}

}  // namespace

std::vector<std::string> ChatTemplate::names() {
  std::vector<std::string> out;
  for (const NamedFormat& n : kNames) out.push_back(n.name);
  return out;
}

const char* ChatTemplate::name() const {
  for (const NamedFormat& n : kNames)
    if (n.format == format_) return n.name;
  return "chatml";
}

ChatTemplate ChatTemplate::detect(std::string_view t) {
  ChatTemplate c;
  for (const NamedFormat& n : kNames) {
    if (t == n.name) {
      c.format_ = n.format;
      return c;
    }
  }
  auto has = [&](std::string_view s) { return t.find(s) != std::string_view::npos; };
  auto unknown = [&](const std::string& why) {
    c.format_ = ChatFormat::ChatML;
    c.warning_ = why + "; formatting the conversation as ChatML";
    return c;
  };
  if (t.empty()) return unknown("the model has no chat template");
  // The order of the tests is llama.cpp's: several families share substrings.
  if (has("<|im_start|>")) {
    if (has("<|im_sep|>")) return unknown("the chat template is Phi-4's (<|im_sep|>), which is not supported");
    c.format_ = ChatFormat::ChatML;
    c.default_system_ = find_default_system_prompt(t);
  } else if (t.substr(0, 7) == "mistral" || has("[INST]")) {
    if (has("[SYSTEM_PROMPT]")) {
      c.format_ = ChatFormat::MistralV7;
    } else if (has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]")) {
      c.format_ = has(" [INST]") ? ChatFormat::MistralV1
                : has("\"[INST]\"") ? ChatFormat::MistralV3Tekken
                                    : ChatFormat::MistralV3;
    } else if (has("content.strip()")) {
      c.format_ = ChatFormat::Llama2SysStrip;
    } else if (has("bos_token + '[INST]")) {
      c.format_ = ChatFormat::Llama2SysBos;
    } else if (has("<<SYS>>")) {
      c.format_ = ChatFormat::Llama2Sys;
    } else {
      c.format_ = ChatFormat::Llama2;
    }
  } else if (has("<|assistant|>") && has("<|end|>")) {
    c.format_ = ChatFormat::Phi3;
  } else if (has("<|assistant|>") && has("<|user|>")) {
    return unknown("the chat template is Falcon-3's or GLM-Edge's, which are not supported");
  } else if (has("<|user|>") && has("<|endoftext|>")) {
    c.format_ = ChatFormat::Zephyr;
  } else if (has("<start_of_turn>")) {
    c.format_ = ChatFormat::Gemma;
  } else if (has("<|start_header_id|>") && has("<|end_header_id|>")) {
    c.format_ = ChatFormat::Llama3;
  } else {
    return unknown("the chat template is not one of the supported families");
  }
  return c;
}

std::string ChatTemplate::apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  std::string s;
  switch (format_) {
    case ChatFormat::ChatML: {
      if (!default_system_.empty() && (messages.empty() || messages[0].role != "system"))
        s += "<|im_start|>system\n" + default_system_ + "<|im_end|>\n";
      for (const ChatMessage& m : messages) s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) s += "<|im_start|>assistant\n";
      break;
    }
    case ChatFormat::MistralV7:
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          s += "[SYSTEM_PROMPT] " + m.content + "[/SYSTEM_PROMPT]";
        } else if (m.role == "user") {
          s += "[INST] " + m.content + "[/INST]";
        } else {
          s += " " + m.content + "</s>";
        }
      }
      break;
    case ChatFormat::MistralV1:
    case ChatFormat::MistralV3:
    case ChatFormat::MistralV3Tekken: {
      const std::string lead = format_ == ChatFormat::MistralV1 ? " " : "";
      const std::string trail = format_ == ChatFormat::MistralV3Tekken ? "" : " ";
      bool in_turn = false;
      for (const ChatMessage& m : messages) {
        if (!in_turn) {
          s += lead + "[INST]" + trail;
          in_turn = true;
        }
        if (m.role == "system") {
          s += m.content + "\n\n";
        } else if (m.role == "user") {
          s += m.content + lead + "[/INST]";
        } else {
          s += trail + (format_ == ChatFormat::MistralV3 ? trim(m.content) : m.content) + "</s>";
          in_turn = false;
        }
      }
      break;
    }
    case ChatFormat::Llama2:
    case ChatFormat::Llama2Sys:
    case ChatFormat::Llama2SysBos:
    case ChatFormat::Llama2SysStrip: {
      const bool system_block = format_ != ChatFormat::Llama2;
      const bool bos_in_history = format_ == ChatFormat::Llama2SysBos;
      const bool strip = format_ == ChatFormat::Llama2SysStrip;
      bool in_turn = true;  // the first [INST] is written here; BOS comes from the tokenizer
      s += "[INST] ";
      for (const ChatMessage& m : messages) {
        const std::string content = strip ? trim(m.content) : m.content;
        if (!in_turn) {
          in_turn = true;
          s += bos_in_history ? "<s>[INST] " : "[INST] ";
        }
        if (m.role == "system") {
          s += system_block ? "<<SYS>>\n" + content + "\n<</SYS>>\n\n" : content + "\n";
        } else if (m.role == "user") {
          s += content + " [/INST]";
        } else {
          s += content + "</s>";
          in_turn = false;
        }
      }
      break;
    }
    case ChatFormat::Llama3:
      for (const ChatMessage& m : messages)
        s += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
      if (add_generation_prompt) s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::Phi3:
      for (const ChatMessage& m : messages) s += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      if (add_generation_prompt) s += "<|assistant|>\n";
      break;
    case ChatFormat::Zephyr:
      for (const ChatMessage& m : messages) s += "<|" + m.role + "|>\n" + m.content + "<|endoftext|>\n";
      if (add_generation_prompt) s += "<|assistant|>\n";
      break;
    case ChatFormat::Gemma: {
      // Gemma has no system role: the system message goes before the next user message.
      std::string system;
      for (const ChatMessage& m : messages) {
        if (m.role == "system") {
          system = trim(m.content);
          continue;
        }
        const std::string role = m.role == "assistant" ? "model" : m.role;
        s += "<start_of_turn>" + role + "\n";
        if (!system.empty() && role != "model") {
          s += system + "\n\n";
          system.clear();
        }
        s += trim(m.content) + "<end_of_turn>\n";
      }
      if (add_generation_prompt) s += "<start_of_turn>model\n";
      break;
    }
  }
  return s;
}

}  // namespace qf

// Chat templates: family detection from Jinja text and the exact text each family renders for a
// 3-message conversation with and without a system message. The expected strings follow
// llama.cpp's llm_chat_apply_template (Feb 2025); the SmolLM2 ones were checked against its
// real Jinja template rendered by jinja2.
#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"
#include "tokenizer_test_util.h"

namespace qf {
namespace {

const std::vector<ChatMessage> kWithSystem = {
    {"system", "You are a helpful assistant."}, {"user", "Hello"}, {"assistant", " Hi there! "}};
const std::vector<ChatMessage> kWithoutSystem = {{"user", "Hello"}, {"assistant", " Hi there! "}, {"user", "What is 2+2?"}};

struct Expected {
  const char* name;
  ChatFormat format;
  const char* with_system;     // add_generation_prompt = true
  const char* without_system;  // add_generation_prompt = true
};

const Expected kFamilies[] = {
    {"chatml", ChatFormat::ChatML,
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n"
     "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"},
    {"llama2", ChatFormat::Llama2, "[INST] You are a helpful assistant.\nHello [/INST] Hi there! </s>",
     "[INST] Hello [/INST] Hi there! </s>[INST] What is 2+2? [/INST]"},
    {"llama2-sys", ChatFormat::Llama2Sys, "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s>",
     "[INST] Hello [/INST] Hi there! </s>[INST] What is 2+2? [/INST]"},
    {"llama2-sys-bos", ChatFormat::Llama2SysBos,
     "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi there! </s>",
     "[INST] Hello [/INST] Hi there! </s><s>[INST] What is 2+2? [/INST]"},
    {"llama2-sys-strip", ChatFormat::Llama2SysStrip,
     "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST]Hi there!</s>",
     "[INST] Hello [/INST]Hi there!</s>[INST] What is 2+2? [/INST]"},
    {"mistral-v1", ChatFormat::MistralV1, " [INST] You are a helpful assistant.\n\nHello [/INST]  Hi there! </s>",
     " [INST] Hello [/INST]  Hi there! </s> [INST] What is 2+2? [/INST]"},
    {"mistral-v3", ChatFormat::MistralV3, "[INST] You are a helpful assistant.\n\nHello[/INST] Hi there!</s>",
     "[INST] Hello[/INST] Hi there!</s>[INST] What is 2+2?[/INST]"},
    {"mistral-v3-tekken", ChatFormat::MistralV3Tekken, "[INST]You are a helpful assistant.\n\nHello[/INST] Hi there! </s>",
     "[INST]Hello[/INST] Hi there! </s>[INST]What is 2+2?[/INST]"},
    {"mistral-v7", ChatFormat::MistralV7,
     "[SYSTEM_PROMPT] You are a helpful assistant.[/SYSTEM_PROMPT][INST] Hello[/INST]  Hi there! </s>",
     "[INST] Hello[/INST]  Hi there! </s>[INST] What is 2+2?[/INST]"},
    {"llama3", ChatFormat::Llama3,
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
     "Hi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
     "Hi there!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"phi3", ChatFormat::Phi3,
     "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n Hi there! <|end|>\n<|assistant|>\n",
     "<|user|>\nHello<|end|>\n<|assistant|>\n Hi there! <|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n"},
    {"zephyr", ChatFormat::Zephyr,
     "<|system|>\nYou are a helpful assistant.<|endoftext|>\n<|user|>\nHello<|endoftext|>\n<|assistant|>\n Hi there! "
     "<|endoftext|>\n<|assistant|>\n",
     "<|user|>\nHello<|endoftext|>\n<|assistant|>\n Hi there! <|endoftext|>\n<|user|>\nWhat is 2+2?<|endoftext|>\n"
     "<|assistant|>\n"},
    {"gemma", ChatFormat::Gemma,
     "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n"
     "<start_of_turn>model\n",
     "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there!<end_of_turn>\n<start_of_turn>user\n"
     "What is 2+2?<end_of_turn>\n<start_of_turn>model\n"},
};

TEST(ChatTemplate, EachFamilyRendersExactly) {
  for (const Expected& e : kFamilies) {
    const ChatTemplate t = ChatTemplate::detect(e.name);
    EXPECT_EQ(t.format(), e.format) << e.name;
    EXPECT_STREQ(t.name(), e.name);
    EXPECT_TRUE(t.warning().empty()) << e.name;
    EXPECT_EQ(t.apply(kWithSystem, true), e.with_system) << e.name;
    EXPECT_EQ(t.apply(kWithoutSystem, true), e.without_system) << e.name;
  }
  EXPECT_EQ(ChatTemplate::names().size(), std::size(kFamilies));
}

TEST(ChatTemplate, GenerationPromptIsTheAssistantHeader) {
  const ChatTemplate chatml = ChatTemplate::detect("chatml");
  EXPECT_EQ(chatml.apply(kWithoutSystem, false) + "<|im_start|>assistant\n", chatml.apply(kWithoutSystem, true));
  const ChatTemplate llama3 = ChatTemplate::detect("llama3");
  EXPECT_EQ(llama3.apply({{"user", "x"}}, false), "<|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
}

TEST(ChatTemplate, SmolLM2AddsItsDefaultSystemMessageWhenThereIsNone) {
  const std::string jinja =
      testing::read_json(testing::tokenizer_data("smollm2_tokenizer_config.json"))["chat_template"].get<std::string>();
  const ChatTemplate t = ChatTemplate::detect(jinja);
  EXPECT_EQ(t.format(), ChatFormat::ChatML);
  EXPECT_TRUE(t.warning().empty());
  // Rendered from the Jinja template by jinja2 3.1.
  EXPECT_EQ(t.apply(kWithoutSystem, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.apply(kWithSystem, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            "<|im_start|>assistant\n Hi there! <|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.apply(kWithoutSystem, false),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n Hi there! <|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
}

TEST(ChatTemplate, DefaultSystemMessageIsOnlyAPlainLiteral) {
  // Qwen2.5's form: the system branch concatenates an expression, the else branch a literal
  // (with \n escapes in the Jinja source).
  const ChatTemplate qwen = ChatTemplate::detect(
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
      "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
      "{%- endif %}");
  EXPECT_EQ(qwen.default_system_prompt(), "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  // A plain ChatML template has none.
  const ChatTemplate plain = ChatTemplate::detect(
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
      "'\\n'}}{% endfor %}");
  EXPECT_EQ(plain.format(), ChatFormat::ChatML);
  EXPECT_EQ(plain.default_system_prompt(), "");
  EXPECT_EQ(plain.apply(kWithoutSystem, true), kFamilies[0].without_system);
}

TEST(ChatTemplate, FamiliesAreDetectedByTheirMarkers) {
  const std::pair<const char*, ChatFormat> cases[] = {
      {"{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}", ChatFormat::Llama3},
      {"{{ bos_token }}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}",
       ChatFormat::Llama2},
      {"{{ '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}", ChatFormat::Llama2Sys},
      {"{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}", ChatFormat::Llama2SysStrip},
      {"{{ bos_token + '[INST] ' + content + ' [/INST]' }}", ChatFormat::Llama2SysBos},
      {"{{ '[SYSTEM_PROMPT]' }}{{ '[INST]' }}", ChatFormat::MistralV7},
      {"{{ ' [INST] ' + system_message }}", ChatFormat::MistralV1},
      {"{{ '[AVAILABLE_TOOLS]' }}{{ \"[INST]\" }}", ChatFormat::MistralV3Tekken},
      {"{{ '[AVAILABLE_TOOLS]' }}{{ '[INST]' }}", ChatFormat::MistralV3},
      {"{{ '<|user|>\\n' }}{{ '<|assistant|>\\n' }}{{ '<|end|>' }}", ChatFormat::Phi3},
      {"{{ '<|user|>\\n' }}{{ eos_token }}{{ '<|endoftext|>' }}", ChatFormat::Zephyr},
      {"{{ '<start_of_turn>' + role + '\\n' }}", ChatFormat::Gemma},
  };
  for (const auto& [jinja, format] : cases) {
    const ChatTemplate t = ChatTemplate::detect(jinja);
    EXPECT_EQ(t.format(), format) << jinja;
    EXPECT_TRUE(t.warning().empty()) << jinja;
  }
}

TEST(ChatTemplate, UnknownTemplatesFallBackToChatMLWithAWarning) {
  for (const char* jinja : {"", "{{ messages[0]['content'] }}", "<|im_start|>{{ role }}<|im_sep|>"}) {
    const ChatTemplate t = ChatTemplate::detect(jinja);
    EXPECT_EQ(t.format(), ChatFormat::ChatML) << jinja;
    EXPECT_NE(t.warning().find("ChatML"), std::string::npos) << jinja;
    EXPECT_EQ(t.apply(kWithoutSystem, true), kFamilies[0].without_system) << jinja;
  }
}

}  // namespace
}  // namespace qf

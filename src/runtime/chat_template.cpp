#include "runtime/chat_template.h"

#include "core/error.h"

namespace rwkvl {

const char* chat_role_label(ChatRole role) {
  switch (role) {
    case ChatRole::kSystem: return "System";
    case ChatRole::kUser: return "User";
    case ChatRole::kAssistant: return "Assistant";
  }
  return "User";
}

std::string chat_normalize(std::string_view content) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  size_t a = 0, b = content.size();
  while (a < b && space(content[a])) ++a;
  while (b > a && space(content[b - 1])) --b;
  std::string out;
  out.reserve(b - a);
  for (size_t i = a; i < b; ++i) {
    const char c = content[i];
    if (c == '\r' || c == '\n') {
      // A run of line breaks (with any "\r" among them) becomes one "\n".
      size_t j = i;
      while (j < b && (content[j] == '\r' || content[j] == '\n')) ++j;
      out += '\n';
      i = j - 1;
      continue;
    }
    out += c;
  }
  return out;
}

std::string chat_message_text(const ChatMessage& m) {
  std::string text = chat_role_label(m.role);
  const std::string body = chat_normalize(m.content);
  text += ':';
  if (!body.empty()) text += ' ' + body;
  text += "\n\n";
  return text;
}

ChatTokens chat_tokens(const Tokenizer& tok, const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  if (messages.empty() && !add_generation_prompt) RWKVL_FAIL(kInvalidArgument, "the conversation has no messages");
  ChatTokens out;
  for (const ChatMessage& m : messages) {
    const std::vector<int32_t> ids = tok.encode(chat_message_text(m));
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
    out.boundaries.push_back(out.tokens.size());
  }
  if (add_generation_prompt) {
    const std::vector<int32_t> ids = tok.encode(std::string(chat_role_label(ChatRole::kAssistant)) + ":");
    out.tokens.insert(out.tokens.end(), ids.begin(), ids.end());
  }
  return out;
}

}  // namespace rwkvl

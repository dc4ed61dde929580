// The RWKV World chat format, as ChatRWKV and the RWKV World models' instruction data use it:
//   System: ...\n\nUser: ...\n\nAssistant: ...\n\nUser: ...\n\nAssistant:
// Each message's text is normalised so that "\n\n" only ever separates messages (surrounding white space
// trimmed, "\r\n" -> "\n", any run of line breaks -> one "\n"), and the model's reply ends at "\n\n".
//
// Each message is tokenized on its own and the pieces are concatenated: a message's tokens do not depend on
// what follows it, so the token sequence of a conversation extends the sequence of every earlier prefix of it,
// and the state at the end of each message can be cached and reused by a later request (prefix_cache.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace rwkvl {

enum class ChatRole { kSystem, kUser, kAssistant };

struct ChatMessage {
  ChatRole role = ChatRole::kUser;
  std::string content;
};

struct ChatTokens {
  std::vector<int32_t> tokens;
  std::vector<size_t> boundaries;  // token positions where a message ends (increasing; the last may be tokens.size())
};

// "System", "User", "Assistant".
const char* chat_role_label(ChatRole role);
// The message text as it goes into the prompt (see above).
std::string chat_normalize(std::string_view content);
// "User: <normalised content>\n\n" (the prompt text of one message).
std::string chat_message_text(const ChatMessage& m);
// The reply's stop sequence.
inline constexpr std::string_view kChatStop = "\n\n";

// The tokens of the conversation; add_generation_prompt appends "Assistant:" (the reply is generated after it).
// Throws kInvalidArgument for an empty conversation without a generation prompt.
ChatTokens chat_tokens(const Tokenizer& tok, const std::vector<ChatMessage>& messages, bool add_generation_prompt);

}  // namespace rwkvl

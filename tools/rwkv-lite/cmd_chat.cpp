// rwkv-lite chat: a conversation in the terminal in the RWKV World chat format (User: / Assistant:), streamed as
// it is generated, with the state saved, loaded, reset or rolled back for another reply by slash commands.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

const char* kChatHelp =
    "commands: /save FILE  save the conversation's state | /load FILE  continue from a saved state | /reset  start "
    "over | /regen  another reply to the last message | /quit";

struct Chat {
  rwkvl_context* ctx;
  rwkvl_state* state;
  const rwkvl_tokenizer* tok;
  rwkvl_generate_params gen;
  std::vector<int32_t> system_tokens;
  StatePtr before_turn;             // the state before the last user message (/regen)
  std::vector<int32_t> last_prompt; // the last user message + "Assistant:"
  uint64_t turns = 0;
  bool tty = false;
};

// Prints a piece of the reply (its leading blanks dropped: the reply follows "Assistant:").
int print_piece(void* user, const rwkvl_piece* p) {
  bool& at_start = *static_cast<bool*>(user);
  std::string text(p->text, p->text_len);
  if (at_start) {
    const size_t k = text.find_first_not_of(" \t\n");
    if (k == std::string::npos) return 0;
    text.erase(0, k);
    at_start = false;
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  return 0;
}

void feed(Chat& c, const std::vector<int32_t>& tokens) {
  if (!tokens.empty()) check(rwkvl_eval(c.ctx, c.state, tokens.data(), tokens.size(), c.gen.chunk, nullptr));
}

void reply(Chat& c) {
  rwkvl_generate_params g = c.gen;
  g.sampling.seed = c.gen.sampling.seed + c.turns++;
  bool at_start = true;
  rwkvl_generate_result r{};
  check(rwkvl_generate(c.ctx, c.state, c.tok, c.last_prompt.data(), c.last_prompt.size(), &g, print_piece, &at_start, &r));
  // The reply ended at "\n\n" (or at the length limit: then the turn is closed here so the next message starts
  // a new paragraph).
  if (r.finish != RWKVL_FINISH_STOP) {
    const std::vector<int32_t> close = tokenize(c.tok, "\n\n");
    feed(c, close);
  }
  std::fputs("\n\n", stdout);
  std::fflush(stdout);
}

std::vector<int32_t> chat_tokens(const rwkvl_tokenizer* tok, rwkvl_chat_role role, const std::string& text, bool add_prompt) {
  rwkvl_chat_message m{role, text.c_str()};
  size_t n = 0;
  std::vector<int32_t> out(text.size() + 16);
  rwkvl_status st = rwkvl_chat_tokenize(tok, &m, 1, add_prompt ? 1 : 0, out.data(), out.size(), &n, nullptr);
  if (st == RWKVL_ERR_INVALID_ARGUMENT && n > out.size()) {
    out.resize(n);
    st = rwkvl_chat_tokenize(tok, &m, 1, add_prompt ? 1 : 0, out.data(), out.size(), &n, nullptr);
  }
  check(st);
  out.resize(n);
  return out;
}

void start_over(Chat& c) {
  check(rwkvl_state_reset(c.state));
  feed(c, c.system_tokens);
  c.last_prompt.clear();
}

// A slash command; false for /quit.
bool command(Chat& c, const std::string& line) {
  const size_t sp = line.find(' ');
  const std::string cmd = line.substr(0, sp);
  const std::string arg = sp == std::string::npos ? "" : line.substr(line.find_first_not_of(' ', sp) == std::string::npos ? line.size() : line.find_first_not_of(' ', sp));
  if (cmd == "/quit" || cmd == "/exit") return false;
  if (cmd == "/save" || cmd == "/load") {
    if (arg.empty()) {
      std::fprintf(stderr, "%s needs a file name\n", cmd.c_str());
    } else {
      const rwkvl_status st = cmd == "/save" ? rwkvl_state_save(c.state, arg.c_str()) : rwkvl_state_load(c.state, arg.c_str());
      if (st != RWKVL_OK) std::fprintf(stderr, "%s: %s\n", cmd.c_str(), rwkvl_last_error());
      else std::fprintf(stderr, "[%s %s]\n", cmd == "/save" ? "state saved to" : "state loaded from", arg.c_str());
      if (st == RWKVL_OK && cmd == "/load") c.last_prompt.clear();
    }
  } else if (cmd == "/reset") {
    start_over(c);
    std::fprintf(stderr, "[conversation reset]\n");
  } else if (cmd == "/regen") {
    if (c.last_prompt.empty()) {
      std::fprintf(stderr, "/regen: no message to reply to again\n");
    } else {
      check(rwkvl_state_copy(c.state, c.before_turn.get()));
      if (c.tty) std::fputs("Assistant: ", stdout);
      reply(c);
    }
  } else {
    std::fprintf(stderr, "%s\n", kChatHelp);
  }
  return true;
}

}  // namespace

int cmd_chat(const Args& args) {
  const std::string model_path = require(args, "model");
  rwkvl_generate_params gen = rwkvl_generate_default_params();
  gen.max_tokens = args.integer("n-predict");
  gen.sampling.temperature = static_cast<float>(args.number("temp"));
  gen.sampling.top_k = static_cast<int>(args.integer("top-k"));
  gen.sampling.top_p = static_cast<float>(args.number("top-p"));
  gen.sampling.presence_penalty = static_cast<float>(args.number("presence-penalty"));
  gen.sampling.frequency_penalty = static_cast<float>(args.number("frequency-penalty"));
  gen.sampling.penalty_decay = static_cast<float>(args.number("penalty-decay"));
  gen.sampling.seed = static_cast<uint64_t>(args.integer("seed"));
  static const char* const kStop[] = {"\n\n"};
  gen.stop = kStop;
  gen.n_stop = 1;
  gen.ban_eos = 1;
  gen.stop_at_eos = 0;
  gen.feed_last = 1;
  gen.chunk = static_cast<size_t>(args.integer("chunk"));

  const ModelPtr model = load_model(args);
  const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  Settings set = settings(args, model.get());
  set.mem.reserve_bytes += 4 * model_info(model.get()).state_floats;  // the state before the turn (/undo)
  apply(set, ctx.get());
  print_plan(args, ctx.get());
  const StatePtr state = new_state(model.get());
  Chat c{ctx.get(), state.get(), tok.get(), gen, {}, new_state(model.get()), {}, 0, isatty(0) != 0};
  if (args.given("system")) c.system_tokens = chat_tokens(tok.get(), RWKVL_ROLE_SYSTEM, args.str("system"), false);
  start_over(c);
  if (c.tty) std::fprintf(stderr, "[rwkv-lite chat: %s | %s]\n", kChatHelp, model_path.c_str());

  std::string line;
  for (;;) {
    if (c.tty) {
      std::fputs("User: ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line[0] == '/') {
      if (!command(c, line)) break;
      continue;
    }
    check(rwkvl_state_copy(c.before_turn.get(), c.state));
    c.last_prompt = chat_tokens(tok.get(), RWKVL_ROLE_USER, line, true);
    if (c.tty) std::fputs("Assistant: ", stdout);
    reply(c);
  }
  return 0;
}

}  // namespace rwkvl::cli

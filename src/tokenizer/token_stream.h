// Tokens of a text that is read in bounded pieces: the memory held is at most kMaxHeldBytes whatever the text's
// size, and the tokens are exactly those of Tokenizer::encode() of the whole text (see encode_prefix), except
// where a 64 KiB run of text has no point at which the tokenizer may cut (possible for GPT-NeoX on text with no
// white space): there the piece is cut at a UTF-8 character boundary and forced_cuts() counts it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/input_file.h"
#include "tokenizer/tokenizer.h"

namespace rwkvl {

class TokenStream {
 public:
  static constexpr size_t kBlockBytes = 64 << 10;
  // Text buffer (one block plus the carried rest) and the tokens of one block (at most one per byte).
  static constexpr size_t kMaxHeldBytes = 2 * kBlockBytes + kBlockBytes * sizeof(int32_t);

  // The tokenizer must outlive the stream.
  TokenStream(const Tokenizer& tok, InputFile file);
  // Up to cap tokens into out; fewer only at the end of the text (0 once it is all read).
  size_t read(int32_t* out, size_t cap);
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t forced_cuts() const { return forced_cuts_; }

 private:
  void next_block();

  const Tokenizer& tok_;
  InputFile file_;
  std::string buf_;              // text not yet tokenized
  std::vector<int32_t> pending_; // tokens not yet handed out, from pos_
  size_t pos_ = 0;
  bool eof_ = false, done_ = false;
  uint64_t bytes_read_ = 0, forced_cuts_ = 0;
};

}  // namespace rwkvl

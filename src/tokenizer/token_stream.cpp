#include "tokenizer/token_stream.h"

#include <algorithm>
#include <cstring>

namespace rwkvl {

TokenStream::TokenStream(const Tokenizer& tok, InputFile file) : tok_(tok), file_(std::move(file)) {
  buf_.reserve(kBlockBytes);
  pending_.reserve(kBlockBytes);
}

void TokenStream::next_block() {
  pending_.clear();
  pos_ = 0;
  // Fill the buffer up to one block (the rest of the previous block is at its front).
  const size_t have = buf_.size();
  if (!eof_ && have < kBlockBytes) {
    buf_.resize(kBlockBytes);
    const size_t got = file_.read(buf_.data() + have, kBlockBytes - have);
    buf_.resize(have + got);
    bytes_read_ += got;
    eof_ = got < kBlockBytes - have;
  }
  size_t used = tok_.encode_prefix(buf_, eof_, &pending_);
  if (used == 0 && !eof_ && !buf_.empty()) {
    // A full block with no point the tokenizer may cut at: cut before the last UTF-8 lead byte.
    size_t cut = buf_.size() - 1;
    while (cut > 0 && (static_cast<unsigned char>(buf_[cut]) & 0xC0) == 0x80) --cut;
    if (cut == 0) cut = buf_.size();
    used = tok_.encode_prefix(std::string_view(buf_).substr(0, cut), true, &pending_);
    ++forced_cuts_;
  }
  buf_.erase(0, used);
  if (eof_ && buf_.empty()) done_ = true;
}

size_t TokenStream::read(int32_t* out, size_t cap) {
  size_t n = 0;
  while (n < cap) {
    if (pos_ < pending_.size()) {
      const size_t k = std::min(cap - n, pending_.size() - pos_);
      std::memcpy(out + n, pending_.data() + pos_, k * sizeof(int32_t));
      pos_ += k;
      n += k;
      continue;
    }
    if (done_) break;
    next_block();
  }
  return n;
}

}  // namespace rwkvl

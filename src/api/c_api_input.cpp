// C API: input files (regular files only, bounded reads), text streams (tokens of a file read in pieces) and
// outputs written piece by piece through the one file writer.
#include <memory>

#include "api/api_internal.h"
#include "core/file_writer.h"
#include "core/input_file.h"
#include "tokenizer/token_stream.h"

using rwkvl::api::guarded;

struct rwkvl_input {
  rwkvl::InputFile file;
};

struct rwkvl_output {
  std::unique_ptr<rwkvl::FileWriter> w;
};

struct rwkvl_text_stream {
  std::unique_ptr<rwkvl::TokenStream> stream;
};

static_assert(RWKVL_TEXT_STREAM_MAX_BYTES == rwkvl::TokenStream::kMaxHeldBytes, "C API figure out of date");

extern "C" {

rwkvl_status rwkvl_input_open(const char* path, const char* what, int allow_stdin, rwkvl_input** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path && out, "rwkvl_input_open: NULL argument");
    *out = nullptr;
    auto h = std::make_unique<rwkvl_input>();
    h->file = rwkvl::InputFile::open(path, what ? what : "file", allow_stdin != 0);
    *out = h.release();
  });
}

void rwkvl_input_free(rwkvl_input* in) { delete in; }

rwkvl_status rwkvl_input_read(rwkvl_input* in, void* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(in && (out || cap == 0) && n_out, "rwkvl_input_read: NULL argument");
    *n_out = 0;
    *n_out = in->file.read(out, cap);
  });
}

uint64_t rwkvl_input_size(const rwkvl_input* in) { return in ? in->file.size() : 0; }

rwkvl_status rwkvl_text_stream_open(const rwkvl_tokenizer* tok, const char* path, const char* what,
                                    rwkvl_text_stream** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(tok && path && out, "rwkvl_text_stream_open: NULL argument");
    *out = nullptr;
    auto h = std::make_unique<rwkvl_text_stream>();
    h->stream = std::make_unique<rwkvl::TokenStream>(*tok->tok, rwkvl::InputFile::open(path, what ? what : "text file", true));
    *out = h.release();
  });
}

void rwkvl_text_stream_free(rwkvl_text_stream* s) { delete s; }

rwkvl_status rwkvl_text_stream_read(rwkvl_text_stream* s, int32_t* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && (out || cap == 0) && n_out, "rwkvl_text_stream_read: NULL argument");
    *n_out = 0;
    *n_out = s->stream->read(out, cap);
  });
}

uint64_t rwkvl_text_stream_bytes_read(const rwkvl_text_stream* s) { return s ? s->stream->bytes_read() : 0; }
uint64_t rwkvl_text_stream_forced_cuts(const rwkvl_text_stream* s) { return s ? s->stream->forced_cuts() : 0; }

rwkvl_status rwkvl_output_open(const char* path, rwkvl_output** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path && out, "rwkvl_output_open: NULL argument");
    *out = nullptr;
    auto h = std::make_unique<rwkvl_output>();
    h->w = std::make_unique<rwkvl::FileWriter>(path);
    *out = h.release();
  });
}

rwkvl_status rwkvl_output_write(rwkvl_output* o, const void* data, size_t size) {
  return guarded([&] {
    RWKVL_API_REQUIRE(o && o->w && (data || size == 0), "rwkvl_output_write: NULL argument or committed output");
    o->w->write(data, size);
  });
}

rwkvl_status rwkvl_output_commit(rwkvl_output* o) {
  return guarded([&] {
    RWKVL_API_REQUIRE(o && o->w, "rwkvl_output_commit: NULL argument or committed output");
    o->w->commit();
    o->w.reset();
  });
}

void rwkvl_output_free(rwkvl_output* o) { delete o; }

}  // extern "C"

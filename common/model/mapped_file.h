// A read-only memory map of a whole file. Model weights stay in the page cache and are shared
// between processes; nothing is copied. Thread-safety: immutable after Open.
#ifndef TANDEM_COMMON_MODEL_MAPPED_FILE_H_
#define TANDEM_COMMON_MODEL_MAPPED_FILE_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"

namespace tandem::model {

class MappedFile {
 public:
  // NotFound when the file does not exist, InvalidArgument for a directory, otherwise the errno
  // text. An empty file maps to an empty span.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace tandem::model

#endif  // TANDEM_COMMON_MODEL_MAPPED_FILE_H_

#include "core/merkle.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/crypto.h"
#include "tests/testing/status_matchers.h"

namespace casebridge::merkle {
namespace {

using ::casebridge::testing::IsOk;
using ::casebridge::testing::StatusIs;
using ::testing::_;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using Json = ::nlohmann::json;
using Proof = std::vector<std::string>;

constexpr uint64_t kMaxUint64 = std::numeric_limits<uint64_t>::max();

std::string FromHex(absl::string_view hex) {
  return absl::HexStringToBytes(hex);
}

std::string FromBase64(absl::string_view b64) {
  std::string out;
  EXPECT_TRUE(absl::Base64Unescape(b64, &out)) << "bad base64: " << b64;
  return out;
}

// The reference hashes are spelled out with the plain SHA-256 helper, so a
// mistake in merkle.cc's buffer handling cannot hide on both sides.
std::string RefLeafHash(absl::string_view entry) {
  return crypto::Sha256(absl::StrCat(absl::string_view("\x00", 1), entry));
}
std::string RefNodeHash(absl::string_view left, absl::string_view right) {
  return crypto::Sha256(absl::StrCat("\x01", left, right));
}

// RFC 6962 §2.1 as written: MTH, PATH and PROOF/SUBPROOF over a list of leaf
// hashes, recursing on D[begin:end]. Subtree hashes are memoised only so
// that checking every proof of every tree up to 256 leaves stays quick.
class ReferenceTree {
 public:
  explicit ReferenceTree(std::vector<std::string> leaf_hashes)
      : leaves_(std::move(leaf_hashes)) {}

  std::string Root(uint64_t size) { return Mth(0, size); }
  Proof Path(uint64_t m, uint64_t size) { return PathOf(m, 0, size); }
  Proof ConsistencyProof(uint64_t m, uint64_t size) {
    return SubProof(m, 0, size, true);
  }
  std::string Mth(uint64_t begin, uint64_t end) {
    const uint64_t n = end - begin;
    if (n == 0) return crypto::Sha256("");
    if (n == 1) return leaves_.at(begin);
    auto it = memo_.find({begin, end});
    if (it != memo_.end()) return it->second;
    const uint64_t k = Split(n);
    std::string hash = RefNodeHash(Mth(begin, begin + k), Mth(begin + k, end));
    memo_.emplace(std::make_pair(begin, end), hash);
    return hash;
  }

 private:
  // The largest power of two smaller than n, found the slow way.
  static uint64_t Split(uint64_t n) {
    uint64_t k = 1;
    while (k * 2 < n) k *= 2;
    return k;
  }
  Proof PathOf(uint64_t m, uint64_t begin, uint64_t end) {
    const uint64_t n = end - begin;
    if (n <= 1) return {};
    const uint64_t k = Split(n);
    Proof out;
    if (m < k) {
      out = PathOf(m, begin, begin + k);
      out.push_back(Mth(begin + k, end));
    } else {
      out = PathOf(m - k, begin + k, end);
      out.push_back(Mth(begin, begin + k));
    }
    return out;
  }
  Proof SubProof(uint64_t m, uint64_t begin, uint64_t end, bool b) {
    const uint64_t n = end - begin;
    if (m == n) {
      if (b) return {};
      return {Mth(begin, end)};
    }
    const uint64_t k = Split(n);
    Proof out;
    if (m <= k) {
      out = SubProof(m, begin, begin + k, b);
      out.push_back(Mth(begin + k, end));
    } else {
      out = SubProof(m - k, begin + k, end, false);
      out.push_back(Mth(begin, begin + k));
    }
    return out;
  }

  std::vector<std::string> leaves_;
  std::map<std::pair<uint64_t, uint64_t>, std::string> memo_;
};

// Whether node (level, index) lies wholly inside the first `size` leaves:
// (index + 1) * 2^level <= size, written so that it cannot overflow.
bool NodeInside(int level, uint64_t index, uint64_t size) {
  if (level < 0 || level > 63) return false;
  return index < (size >> level);
}

// Stored nodes of one growing tree, filled through CompactRange's sink the
// way a log stores them. Serves only nodes inside the tree size it is told
// about, and fails the test on any other request, since NodeSource promises
// never to receive one.
class MemoryNodes : public NodeSource {
 public:
  CompactRange::NodeSink Sink() {
    return [this](int level, uint64_t index, absl::string_view hash) {
      ASSERT_GE(level, 0);
      const auto l = static_cast<size_t>(level);
      if (levels_.size() <= l) levels_.resize(l + 1);
      // Nodes of a level complete left to right, so they arrive in order.
      EXPECT_EQ(index, levels_[l].size()) << "level " << level;
      levels_[l].emplace_back(hash);
    };
  }
  void set_tree_size(uint64_t size) { tree_size_ = size; }
  int reads() const { return reads_; }
  void reset_reads() { reads_ = 0; }

  absl::StatusOr<std::string> Node(int level, uint64_t index) override {
    ++reads_;
    if (!NodeInside(level, index, tree_size_)) {
      ADD_FAILURE() << "asked for node (" << level << ", " << index
                    << ") outside the tree of size " << tree_size_;
      return absl::OutOfRangeError("node outside the tree");
    }
    const auto l = static_cast<size_t>(level);
    if (l >= levels_.size() || index >= levels_[l].size()) {
      ADD_FAILURE() << "node (" << level << ", " << index << ") not stored";
      return absl::NotFoundError("node not stored");
    }
    return levels_[l][index];
  }

 private:
  std::vector<std::vector<std::string>> levels_;
  uint64_t tree_size_ = 0;
  int reads_ = 0;
};

// A tree whose leaves all have the same hash, so every complete subtree of a
// level has the same hash and any size up to 2^64 - 1 can be served without
// storing anything. Proofs over it verify, which makes it a check of proof
// shapes and read counts at sizes far beyond what can be built.
class UniformNodes : public NodeSource {
 public:
  UniformNodes() {
    level_hash_[0] = RefLeafHash("same");
    for (size_t l = 1; l < level_hash_.size(); ++l) {
      level_hash_[l] = RefNodeHash(level_hash_[l - 1], level_hash_[l - 1]);
    }
  }
  const std::string& leaf_hash() const { return level_hash_[0]; }
  void set_tree_size(uint64_t size) { tree_size_ = size; }
  int reads() const { return reads_; }
  void reset_reads() { reads_ = 0; }

  absl::StatusOr<std::string> Node(int level, uint64_t index) override {
    ++reads_;
    if (!NodeInside(level, index, tree_size_)) {
      ADD_FAILURE() << "asked for node (" << level << ", " << index
                    << ") outside the tree of size " << tree_size_;
      return absl::OutOfRangeError("node outside the tree");
    }
    return level_hash_[static_cast<size_t>(level)];
  }

 private:
  std::array<std::string, 64> level_hash_;
  uint64_t tree_size_ = 0;
  int reads_ = 0;
};

// A store that cannot answer.
class FailingNodes : public NodeSource {
 public:
  explicit FailingNodes(absl::Status status) : status_(std::move(status)) {}
  absl::StatusOr<std::string> Node(int, uint64_t) override { return status_; }

 private:
  absl::Status status_;
};

// A corrupted store: every node is a byte short.
class ShortNodes : public NodeSource {
 public:
  absl::StatusOr<std::string> Node(int, uint64_t) override {
    return std::string(kHashSize - 1, 'x');
  }
};

// Leaves, stored nodes, and the root at every size, of a tree built by
// appending.
struct BuiltTree {
  explicit BuiltTree(uint64_t size) {
    CompactRange range;
    roots.push_back(range.Root());
    for (uint64_t i = 0; i < size; ++i) {
      leaves.push_back(RefLeafHash(absl::StrCat("entry ", i)));
      range.Append(leaves.back(), nodes.Sink());
      roots.push_back(range.Root());
    }
    nodes.set_tree_size(size);
  }
  std::vector<std::string> leaves;
  MemoryNodes nodes;
  std::vector<std::string> roots;  // roots[n]: root of the first n leaves
};

// ceil(log2(n)) for n >= 1: the height of a tree of n leaves.
int Height(uint64_t n) { return static_cast<int>(std::bit_width(n - 1)); }

// ---------------------------------------------------------------------------
// Hashes

TEST(MerkleHashTest, EmptyRootAndEmptyLeafMatchKnownAnswers) {
  EXPECT_EQ(absl::Base64Escape(EmptyRoot()),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  EXPECT_EQ(absl::Base64Escape(LeafHash("")),
            "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=");
  EXPECT_EQ(CompactRange().Root(), EmptyRoot());
}

TEST(MerkleHashTest, LeafAndNodeHashesArePrefixedSha256AtEverySize) {
  // Around SHA-256's 64-byte block and well past it.
  for (size_t n : {0, 1, 31, 32, 33, 146, 1022, 1023, 1024, 1025, 70000}) {
    std::string entry(n, '\0');
    for (size_t i = 0; i < n; ++i) entry[i] = static_cast<char>(i * 7 + 3);
    EXPECT_EQ(LeafHash(entry), RefLeafHash(entry)) << "entry of " << n;
  }
  const std::string a = LeafHash("a");
  const std::string b = LeafHash("b");
  EXPECT_EQ(NodeHash(a, b), RefNodeHash(a, b));
  EXPECT_NE(NodeHash(a, b), NodeHash(b, a));
  // Domain separation: a leaf never collides with the node of its halves.
  EXPECT_NE(LeafHash(a + b), NodeHash(a, b));
  EXPECT_EQ(NodeHash("short", "er"), RefNodeHash("short", "er"));
}

// The RFC 6962 test tree of eight leaves that the probes are drawn from, and
// its roots at sizes 1..8 as published with Certificate Transparency's tests.
std::vector<std::string> Rfc6962TestLeafHashes() {
  std::vector<std::string> out;
  for (absl::string_view hex :
       {"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
        "606162636465666768696a6b6c6d6e6f"}) {
    out.push_back(LeafHash(FromHex(hex)));
  }
  return out;
}

TEST(MerkleHashTest, Rfc6962TestTreeRootsMatchPublishedValues) {
  const std::vector<std::string> want = {
      "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
      "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
      "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
      "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
      "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
      "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
      "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
      "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"};
  MemoryNodes nodes;
  CompactRange range;
  for (const std::string& leaf : Rfc6962TestLeafHashes()) {
    range.Append(leaf, nodes.Sink());
    const uint64_t n = range.size();
    EXPECT_EQ(crypto::HexEncode(range.Root()), want[n - 1]) << "size " << n;
    nodes.set_tree_size(n);
    ASSERT_OK_AND_ASSIGN(const std::string root, RootAt(n, nodes));
    EXPECT_EQ(crypto::HexEncode(root), want[n - 1]) << "size " << n;
  }
}

// ---------------------------------------------------------------------------
// The transparency-dev probes (tests/testdata/README.md)

std::filesystem::path ProbeDir() {
  return std::filesystem::path(CASEBRIDGE_SOURCE_DIR) / "tests" / "testdata" /
         "rfc6962-probes";
}

std::vector<std::filesystem::path> JsonFilesUnder(
    const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".json") {
      out.push_back(entry.path());
    }
  }
  EXPECT_FALSE(ec) << dir << ": " << ec.message();
  std::sort(out.begin(), out.end());
  return out;
}

// The vendored set has 98 probes of each kind; far fewer means files went
// missing, and a run over nothing would prove nothing.
constexpr size_t kMinProbesPerKind = 90;

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A JSON number as uint64, or nullopt when it is negative, fractional or
// not a number: such a probe cannot even be put to the verifier, which only
// takes uint64 sizes, so it counts as refused.
std::optional<uint64_t> SizeField(const Json& probe, const char* key) {
  const auto it = probe.find(key);
  if (it == probe.end()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  return std::nullopt;
}

std::string HashField(const Json& probe, const char* key) {
  const auto it = probe.find(key);
  if (it == probe.end() || !it->is_string()) {
    ADD_FAILURE() << "missing string field " << key;
    return "";
  }
  return FromBase64(it->get<std::string>());
}

Proof ProofField(const Json& probe) {
  Proof out;
  const auto it = probe.find("proof");
  if (it == probe.end() || it->is_null()) return out;
  if (!it->is_array()) {
    ADD_FAILURE() << "proof is neither null nor a list";
    return out;
  }
  for (const Json& element : *it) {
    if (!element.is_string()) {
      ADD_FAILURE() << "proof element is not a string";
      continue;
    }
    out.push_back(FromBase64(element.get<std::string>()));
  }
  return out;
}

absl::Status RunInclusionProbe(const Json& probe) {
  const std::optional<uint64_t> index = SizeField(probe, "leafIdx");
  const std::optional<uint64_t> size = SizeField(probe, "treeSize");
  if (!index || !size) {
    return absl::InvalidArgumentError("leafIdx or treeSize is not a uint64");
  }
  return VerifyInclusion(*index, *size, HashField(probe, "leafHash"),
                         ProofField(probe), HashField(probe, "root"));
}

absl::Status RunConsistencyProbe(const Json& probe) {
  const std::optional<uint64_t> size1 = SizeField(probe, "size1");
  const std::optional<uint64_t> size2 = SizeField(probe, "size2");
  if (!size1 || !size2) {
    return absl::InvalidArgumentError("size1 or size2 is not a uint64");
  }
  return VerifyConsistency(*size1, *size2, HashField(probe, "root1"),
                           HashField(probe, "root2"), ProofField(probe));
}

struct ProbeTally {
  size_t files = 0;
  size_t run = 0;
  size_t accepted = 0;
};

ProbeTally RunProbes(absl::string_view kind,
                     absl::Status (*run)(const Json& probe)) {
  ProbeTally tally;
  const std::vector<std::filesystem::path> files =
      JsonFilesUnder(ProbeDir() / std::string(kind));
  tally.files = files.size();
  for (const std::filesystem::path& file : files) {
    SCOPED_TRACE(file.string());
    const Json probe = Json::parse(ReadText(file), /*cb=*/nullptr,
                                   /*allow_exceptions=*/false);
    if (probe.is_discarded() || !probe.is_object()) {
      ADD_FAILURE() << file << ": not a JSON object";
      continue;
    }
    const auto want_err = probe.find("wantErr");
    if (want_err == probe.end() || !want_err->is_boolean()) {
      ADD_FAILURE() << file << ": no boolean wantErr";
      continue;
    }
    const std::string desc = probe.value("desc", "");
    const absl::Status status = run(probe);
    ++tally.run;
    if (status.ok()) ++tally.accepted;
    if (want_err->get<bool>()) {
      EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument, _))
          << file << " (" << desc << ") was accepted";
    } else {
      EXPECT_OK(status) << file << " (" << desc << ")";
    }
  }
  return tally;
}

TEST(Rfc6962ProbesTest, InclusionVerifierAcceptsExactlyTheValidProbes) {
  const ProbeTally tally = RunProbes("inclusion", RunInclusionProbe);
  EXPECT_GE(tally.files, kMinProbesPerKind);
  EXPECT_EQ(tally.run, tally.files);
  // Five happy paths plus the single-entry match.
  EXPECT_EQ(tally.accepted, 6u);
}

TEST(Rfc6962ProbesTest, ConsistencyVerifierAcceptsExactlyTheValidProbes) {
  const ProbeTally tally = RunProbes("consistency", RunConsistencyProbe);
  EXPECT_GE(tally.files, kMinProbesPerKind);
  EXPECT_EQ(tally.run, tally.files);
  // Five happy paths plus equal (non-zero) sizes with equal roots.
  EXPECT_EQ(tally.accepted, 6u);
}

// Our proof generator, run over the RFC 6962 test tree, reproduces every
// happy-path probe exactly: same root, same hashes in the same order.
TEST(Rfc6962ProbesTest, GeneratorReproducesEveryHappyPathProof) {
  MemoryNodes nodes;
  CompactRange range;
  for (const std::string& leaf : Rfc6962TestLeafHashes()) {
    range.Append(leaf, nodes.Sink());
  }
  int checked = 0;
  for (const std::filesystem::path& file : JsonFilesUnder(ProbeDir())) {
    if (file.filename() != "happy-path.json") continue;
    SCOPED_TRACE(file.string());
    const Json probe = Json::parse(ReadText(file), nullptr, false);
    ASSERT_TRUE(probe.is_object());
    if (probe.contains("leafIdx")) {
      const uint64_t size = probe["treeSize"].get<uint64_t>();
      nodes.set_tree_size(size);
      ASSERT_OK_AND_ASSIGN(
          const Proof proof,
          InclusionProof(probe["leafIdx"].get<uint64_t>(), size, nodes));
      EXPECT_THAT(proof, ElementsAreArray(ProofField(probe)));
      ASSERT_OK_AND_ASSIGN(const std::string root, RootAt(size, nodes));
      EXPECT_EQ(root, HashField(probe, "root"));
    } else {
      const uint64_t size1 = probe["size1"].get<uint64_t>();
      const uint64_t size2 = probe["size2"].get<uint64_t>();
      nodes.set_tree_size(size2);
      ASSERT_OK_AND_ASSIGN(const Proof proof,
                           ConsistencyProof(size1, size2, nodes));
      EXPECT_THAT(proof, ElementsAreArray(ProofField(probe)));
      ASSERT_OK_AND_ASSIGN(const std::string root1, RootAt(size1, nodes));
      ASSERT_OK_AND_ASSIGN(const std::string root2, RootAt(size2, nodes));
      EXPECT_EQ(root1, HashField(probe, "root1"));
      EXPECT_EQ(root2, HashField(probe, "root2"));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 10);
}

// ---------------------------------------------------------------------------
// Against the reference

TEST(MerkleReferenceTest, EveryRootAndProofUpTo256LeavesMatchesRfc6962) {
  constexpr uint64_t kMaxSize = 256;
  BuiltTree tree(kMaxSize);
  ReferenceTree ref(tree.leaves);
  for (uint64_t n = 1; n <= kMaxSize; ++n) {
    const std::string want_root = ref.Root(n);
    ASSERT_EQ(tree.roots[n], want_root) << "CompactRange at size " << n;
    tree.nodes.set_tree_size(n);
    ASSERT_OK_AND_ASSIGN(const std::string root, RootAt(n, tree.nodes));
    ASSERT_EQ(root, want_root) << "RootAt size " << n;

    for (uint64_t i = 0; i < n; ++i) {
      ASSERT_OK_AND_ASSIGN(const Proof proof, InclusionProof(i, n, tree.nodes));
      ASSERT_EQ(proof, ref.Path(i, n)) << "PATH(" << i << ", D[" << n << "])";
      ASSERT_OK(VerifyInclusion(i, n, tree.leaves[i], proof, root))
          << "leaf " << i << " of " << n;
    }
    for (uint64_t m = 1; m <= n; ++m) {
      ASSERT_OK_AND_ASSIGN(const Proof proof,
                           ConsistencyProof(m, n, tree.nodes));
      ASSERT_EQ(proof, ref.ConsistencyProof(m, n))
          << "PROOF(" << m << ", D[" << n << "])";
      ASSERT_OK(VerifyConsistency(m, n, ref.Root(m), root, proof))
          << m << " -> " << n;
    }
  }
}

// Proofs cost O(log n) node reads: at most one element of a proof is a
// partial subtree, read as one node per set bit of its size, and every other
// element is one stored node.
TEST(MerkleReferenceTest, ProofsReadLogarithmicallyManyStoredNodes) {
  constexpr uint64_t kSize = (uint64_t{1} << 17) + 12345;
  BuiltTree tree(kSize);
  for (uint64_t size : {kSize, kSize - 1, uint64_t{1} << 17,
                        (uint64_t{1} << 17) + 1, uint64_t{99999}}) {
    SCOPED_TRACE(absl::StrCat("size ", size));
    const int max_reads = 2 * Height(size) + 2;
    tree.nodes.set_tree_size(size);
    tree.nodes.reset_reads();
    ASSERT_OK_AND_ASSIGN(const std::string root, RootAt(size, tree.nodes));
    EXPECT_EQ(root, tree.roots[size]);
    EXPECT_EQ(tree.nodes.reads(), std::popcount(size));

    std::vector<uint64_t> samples = {0, 1, size / 2, size - 2, size - 1};
    for (uint64_t x = 12345; samples.size() < 60;) {
      x = x * 6364136223846793005u + 1442695040888963407u;
      samples.push_back((x >> 11) % size);
    }
    for (uint64_t index : samples) {
      tree.nodes.reset_reads();
      ASSERT_OK_AND_ASSIGN(const Proof proof,
                           InclusionProof(index, size, tree.nodes));
      EXPECT_LE(tree.nodes.reads(), max_reads) << "leaf " << index;
      EXPECT_OK(VerifyInclusion(index, size, tree.leaves[index], proof, root));

      const uint64_t size1 = index + 1;
      tree.nodes.reset_reads();
      ASSERT_OK_AND_ASSIGN(const Proof consistency,
                           ConsistencyProof(size1, size, tree.nodes));
      EXPECT_LE(tree.nodes.reads(), max_reads) << size1 << " -> " << size;
      EXPECT_OK(
          VerifyConsistency(size1, size, tree.roots[size1], root, consistency));
    }
  }
}

// The same at sizes no test can build, up to 2^64 - 1, where the proof
// length arithmetic meets its edge cases (shifts by 64 bits, full-width
// masks). UBSan watches this one in the sanitizer build.
TEST(MerkleReferenceTest, ProofsAtHugeSizesVerifyAndStayLogarithmic) {
  UniformNodes nodes;
  for (uint64_t size : {(uint64_t{1} << 20) + 12345,
                        (uint64_t{1} << 40) + 12345, uint64_t{1} << 63,
                        (uint64_t{1} << 63) + 1, kMaxUint64 - 1, kMaxUint64}) {
    SCOPED_TRACE(absl::StrCat("size ", size));
    const int max_reads = 2 * Height(size) + 2;
    nodes.set_tree_size(size);
    ASSERT_OK_AND_ASSIGN(const std::string root, RootAt(size, nodes));
    for (uint64_t index :
         {uint64_t{0}, uint64_t{1}, size / 3, size / 2, size - 2, size - 1}) {
      nodes.reset_reads();
      ASSERT_OK_AND_ASSIGN(const Proof proof,
                           InclusionProof(index, size, nodes));
      EXPECT_LE(nodes.reads(), max_reads) << "leaf " << index;
      EXPECT_OK(VerifyInclusion(index, size, nodes.leaf_hash(), proof, root))
          << "leaf " << index;

      const uint64_t size1 = index + 1;
      nodes.set_tree_size(size1);
      ASSERT_OK_AND_ASSIGN(const std::string root1, RootAt(size1, nodes));
      nodes.set_tree_size(size);
      nodes.reset_reads();
      ASSERT_OK_AND_ASSIGN(const Proof consistency,
                           ConsistencyProof(size1, size, nodes));
      EXPECT_LE(nodes.reads(), max_reads) << size1 << " -> " << size;
      EXPECT_OK(VerifyConsistency(size1, size, root1, root, consistency))
          << size1 << " -> " << size;
      // One hash short is refused by count, not by walking off the end.
      if (!consistency.empty()) {
        Proof shorter(consistency.begin(), consistency.end() - 1);
        EXPECT_THAT(VerifyConsistency(size1, size, root1, root, shorter),
                    StatusIs(absl::StatusCode::kInvalidArgument,
                             HasSubstr("hashes, expected")));
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Mutated proofs

// Every way of damaging a proof that the mutation tests try: each bit of
// each hash flipped, a hash added at either end, each hash dropped, each
// adjacent pair swapped, the whole list rotated or reversed, a hash cut
// short or lengthened.
std::vector<std::pair<std::string, Proof>> Mutations(const Proof& proof,
                                                     const std::string& extra) {
  std::vector<std::pair<std::string, Proof>> out;
  for (size_t i = 0; i < proof.size(); ++i) {
    for (size_t bit = 0; bit < 8 * kHashSize; ++bit) {
      Proof p = proof;
      p[i][bit / 8] = static_cast<char>(p[i][bit / 8] ^ (1 << (bit % 8)));
      out.emplace_back(absl::StrCat("flip bit ", bit, " of hash ", i), p);
    }
    Proof dropped = proof;
    dropped.erase(dropped.begin() + static_cast<ptrdiff_t>(i));
    out.emplace_back(absl::StrCat("drop hash ", i), dropped);
    Proof cut = proof;
    cut[i].pop_back();
    out.emplace_back(absl::StrCat("hash ", i, " a byte short"), cut);
    Proof longer = proof;
    longer[i].push_back('\0');
    out.emplace_back(absl::StrCat("hash ", i, " a byte long"), longer);
    if (i + 1 < proof.size()) {
      Proof swapped = proof;
      std::swap(swapped[i], swapped[i + 1]);
      out.emplace_back(absl::StrCat("swap hashes ", i, " and ", i + 1),
                       swapped);
    }
  }
  Proof appended = proof;
  appended.push_back(extra);
  out.emplace_back("extra hash at the end", appended);
  Proof prepended = proof;
  prepended.insert(prepended.begin(), extra);
  out.emplace_back("extra hash at the start", prepended);
  if (proof.size() >= 3) {
    Proof rotated = proof;
    std::rotate(rotated.begin(), rotated.begin() + 1, rotated.end());
    out.emplace_back("rotated", rotated);
    Proof reversed = proof;
    std::reverse(reversed.begin(), reversed.end());
    out.emplace_back("reversed", reversed);
  }
  return out;
}

// The shape of PATH(index, D[size]) from RFC 6962's recursion, leaf to
// root: 'R' where the sibling is on the right, 'L' where it is on the left.
// Empty for an index outside the tree, which has no path at all.
std::string InclusionShape(uint64_t index, uint64_t size) {
  if (index >= size) return "none";
  std::string sides;
  for (uint64_t begin = 0, end = size; end - begin > 1;) {
    uint64_t k = 1;
    while (k * 2 < end - begin) k *= 2;
    if (index < begin + k) {
      sides.insert(sides.begin(), 'R');
      end = begin + k;
    } else {
      sides.insert(sides.begin(), 'L');
      begin += k;
    }
  }
  return sides;
}

// The same for PROOF(size1, D[size2]), with 'N' for the old tree's subtree
// that SUBPROOF emits when it is not the whole old tree.
std::string ConsistencyShape(uint64_t size1, uint64_t size2) {
  if (size1 == 0 || size1 >= size2) return "none";
  std::string sides;
  bool whole = true;
  for (uint64_t begin = 0, end = size2;;) {
    if (size1 - begin == end - begin) {
      if (!whole) sides.insert(sides.begin(), 'N');
      break;
    }
    uint64_t k = 1;
    while (k * 2 < end - begin) k *= 2;
    if (size1 - begin <= k) {
      sides.insert(sides.begin(), 'R');
      end = begin + k;
    } else {
      sides.insert(sides.begin(), 'L');
      begin += k;
      whole = false;
    }
  }
  return sides;
}

// A root hash does not commit to the tree size: when two sizes give a proof
// the same shape, the verifier does the same hashing for both, so it must
// accept both. Only the signed checkpoint ties a size to its root, which is
// why size mutations above are expected to fail only where the shape moves.
TEST(MerkleMutationTest, ProofShapesDoNotPinTheTreeSize) {
  BuiltTree tree(8);
  ASSERT_EQ(InclusionShape(0, 8), InclusionShape(0, 7));
  ASSERT_OK_AND_ASSIGN(const Proof proof, InclusionProof(0, 8, tree.nodes));
  EXPECT_OK(VerifyInclusion(0, 7, tree.leaves[0], proof, tree.roots[8]));
  // ...and the root that really belongs to size 7 is refused with it.
  EXPECT_THAT(
      VerifyInclusion(0, 7, tree.leaves[0], proof, tree.roots[7]),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("root mismatch")));
  // Leaf 6 sits deeper in the tree of 8 than in that of 7.
  ASSERT_NE(InclusionShape(6, 8), InclusionShape(6, 7));
  ASSERT_OK_AND_ASSIGN(const Proof proof6, InclusionProof(6, 8, tree.nodes));
  EXPECT_THAT(VerifyInclusion(6, 7, tree.leaves[6], proof6, tree.roots[8]),
              StatusIs(absl::StatusCode::kInvalidArgument, _));
}

TEST(MerkleMutationTest, InclusionVerifierRefusesEveryDamagedProof) {
  // A few leaves past the largest size, for the neighbouring leaf and root.
  BuiltTree tree(260);
  int checked = 0;
  int refused_sizes = 0;
  for (const auto& [size, index] :
       std::vector<std::pair<uint64_t, uint64_t>>{{1, 0},
                                                  {2, 0},
                                                  {2, 1},
                                                  {3, 2},
                                                  {7, 3},
                                                  {8, 5},
                                                  {13, 12},
                                                  {100, 37},
                                                  {255, 128},
                                                  {256, 0},
                                                  {256, 255}}) {
    SCOPED_TRACE(absl::StrCat("leaf ", index, " of ", size));
    tree.nodes.set_tree_size(size);
    ASSERT_OK_AND_ASSIGN(const Proof proof,
                         InclusionProof(index, size, tree.nodes));
    const std::string& leaf = tree.leaves[index];
    const std::string& root = tree.roots[size];
    ASSERT_OK(VerifyInclusion(index, size, leaf, proof, root));

    for (const auto& [what, damaged] : Mutations(proof, tree.leaves[0])) {
      EXPECT_THAT(VerifyInclusion(index, size, leaf, damaged, root),
                  StatusIs(absl::StatusCode::kInvalidArgument, _))
          << what;
      ++checked;
    }
    const auto refused = [&](uint64_t i, uint64_t n, const std::string& l,
                             const std::string& r) {
      return !VerifyInclusion(i, n, l, proof, r).ok();
    };
    // Another tree size is refused whenever it changes the proof's shape;
    // see ProofShapesDoNotPinTheTreeSize for when it does not.
    for (uint64_t other : {size - 1, size + 1, size * 2, size / 2}) {
      EXPECT_EQ(refused(index, other, leaf, root),
                InclusionShape(index, other) != InclusionShape(index, size))
          << "tree size " << other;
      if (InclusionShape(index, other) != InclusionShape(index, size)) {
        ++refused_sizes;
      }
    }
    EXPECT_TRUE(refused(index + 1, size, leaf, root)) << "index + 1";
    EXPECT_TRUE(refused(index - 1, size, leaf, root)) << "index - 1";
    EXPECT_TRUE(refused(index, size, tree.leaves[index + 1], root))
        << "another leaf";
    EXPECT_TRUE(refused(index, size, leaf, tree.roots[size - 1]))
        << "an older root";
    EXPECT_TRUE(refused(index, size, leaf, tree.roots[size + 1]))
        << "another root";
    EXPECT_TRUE(refused(index, size, leaf.substr(1), root)) << "short leaf";
    EXPECT_TRUE(refused(index, size, leaf, root + "x")) << "long root";
  }
  EXPECT_GT(checked, 10000);
  EXPECT_GT(refused_sizes, 10);
}

TEST(MerkleMutationTest, ConsistencyVerifierRefusesEveryDamagedProof) {
  BuiltTree tree(260);
  int checked = 0;
  int refused_sizes = 0;
  for (const auto& [size1, size2] :
       std::vector<std::pair<uint64_t, uint64_t>>{{1, 2},
                                                  {1, 8},
                                                  {2, 3},
                                                  {3, 7},
                                                  {4, 8},
                                                  {6, 8},
                                                  {5, 13},
                                                  {7, 8},
                                                  {100, 255},
                                                  {128, 256},
                                                  {255, 256},
                                                  {1, 256}}) {
    SCOPED_TRACE(absl::StrCat(size1, " -> ", size2));
    tree.nodes.set_tree_size(size2);
    ASSERT_OK_AND_ASSIGN(const Proof proof,
                         ConsistencyProof(size1, size2, tree.nodes));
    const std::string& root1 = tree.roots[size1];
    const std::string& root2 = tree.roots[size2];
    ASSERT_OK(VerifyConsistency(size1, size2, root1, root2, proof));

    for (const auto& [what, damaged] : Mutations(proof, tree.leaves[0])) {
      EXPECT_THAT(VerifyConsistency(size1, size2, root1, root2, damaged),
                  StatusIs(absl::StatusCode::kInvalidArgument, _))
          << what;
      ++checked;
    }
    const auto refused = [&](uint64_t s1, uint64_t s2, const std::string& r1,
                             const std::string& r2) {
      return !VerifyConsistency(s1, s2, r1, r2, proof).ok();
    };
    // As for inclusion: other sizes are refused whenever they change the
    // proof's shape.
    const std::string shape = ConsistencyShape(size1, size2);
    for (const auto& [s1, s2] :
         std::vector<std::pair<uint64_t, uint64_t>>{{size1 - 1, size2},
                                                    {size1 + 1, size2},
                                                    {size1, size2 - 1},
                                                    {size1, size2 + 1},
                                                    {size1 * 2, size2 * 2},
                                                    {size1, size2 * 2}}) {
      EXPECT_EQ(refused(s1, s2, root1, root2),
                ConsistencyShape(s1, s2) != shape)
          << s1 << " -> " << s2;
      if (ConsistencyShape(s1, s2) != shape) ++refused_sizes;
    }
    EXPECT_TRUE(refused(size1, size2, root2, root1)) << "swapped roots";
    EXPECT_TRUE(refused(size1, size2, root1, tree.roots[size2 - 1]))
        << "an older root2";
    EXPECT_TRUE(refused(size1, size2, tree.roots[size1 + 1], root2))
        << "a newer root1";
    EXPECT_TRUE(refused(size1, size2, root1, root1)) << "root1 twice";
    EXPECT_TRUE(refused(size1, size2, root1.substr(1), root2)) << "short root1";
  }
  EXPECT_GT(checked, 10000);
  EXPECT_GT(refused_sizes, 10);
}

// ---------------------------------------------------------------------------
// Arguments and the size-0 rule

TEST(MerkleArgumentTest, ProofsAreRefusedOutsideTheTree) {
  UniformNodes nodes;
  nodes.set_tree_size(5);
  EXPECT_THAT(InclusionProof(5, 5, nodes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("leaf index 5 is outside a tree of size 5")));
  EXPECT_THAT(InclusionProof(0, 0, nodes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("outside a tree of size 0")));
  EXPECT_THAT(
      ConsistencyProof(0, 5, nodes),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty tree")));
  EXPECT_THAT(
      ConsistencyProof(0, 0, nodes),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty tree")));
  EXPECT_THAT(ConsistencyProof(6, 5, nodes),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("smaller size 5")));
  EXPECT_EQ(nodes.reads(), 0);

  ASSERT_OK_AND_ASSIGN(const Proof same, ConsistencyProof(5, 5, nodes));
  EXPECT_THAT(same, IsEmpty());
  EXPECT_EQ(nodes.reads(), 0);
}

TEST(MerkleArgumentTest, VerifiersNameWhatIsWrong) {
  BuiltTree tree(8);
  tree.nodes.set_tree_size(8);
  ASSERT_OK_AND_ASSIGN(const Proof path, InclusionProof(2, 8, tree.nodes));
  const std::string& leaf = tree.leaves[2];
  const std::string& root = tree.roots[8];
  const auto code = absl::StatusCode::kInvalidArgument;

  EXPECT_THAT(VerifyInclusion(8, 8, leaf, path, root),
              StatusIs(code, HasSubstr("leaf index 8 is outside a tree of "
                                       "size 8")));
  EXPECT_THAT(VerifyInclusion(kMaxUint64, 8, leaf, path, root),
              StatusIs(code, HasSubstr("outside a tree")));
  EXPECT_THAT(
      VerifyInclusion(2, 8, leaf, Proof(path.begin(), path.end() - 1), root),
      StatusIs(code, HasSubstr("inclusion proof has 2 hashes, "
                               "expected 3")));
  EXPECT_THAT(VerifyInclusion(2, 8, leaf.substr(1), path, root),
              StatusIs(code, HasSubstr("leaf hash has 31 bytes, expected 32")));
  EXPECT_THAT(VerifyInclusion(2, 8, leaf, path, ""),
              StatusIs(code, HasSubstr("root has 0 bytes")));
  EXPECT_THAT(VerifyInclusion(2, 8, leaf, path, tree.roots[7]),
              StatusIs(code, HasSubstr("root mismatch")));
  Proof bad_element = path;
  bad_element[1] += "x";
  EXPECT_THAT(VerifyInclusion(2, 8, leaf, bad_element, root),
              StatusIs(code, HasSubstr("inclusion proof hash 1 has 33 bytes")));

  ASSERT_OK_AND_ASSIGN(const Proof consistency,
                       ConsistencyProof(1, 8, tree.nodes));
  ASSERT_EQ(consistency.size(), 3u);
  EXPECT_THAT(
      VerifyConsistency(1, 8, tree.roots[1], root,
                        Proof(consistency.begin(), consistency.end() - 1)),
      StatusIs(code, HasSubstr("consistency proof has 2 hashes, expected 3")));
  EXPECT_THAT(VerifyConsistency(1, 8, tree.roots[2], root, consistency),
              StatusIs(code, HasSubstr("root mismatch")));
  EXPECT_THAT(
      VerifyConsistency(1, 8, tree.roots[1], tree.roots[7], consistency),
      StatusIs(code, HasSubstr("root mismatch")));
  EXPECT_THAT(VerifyConsistency(2, 1, tree.roots[2], tree.roots[1], {}),
              StatusIs(code, HasSubstr("smaller size 1")));
}

TEST(MerkleArgumentTest, ConsistencyFollowsTheSizeZeroRule) {
  const auto code = absl::StatusCode::kInvalidArgument;
  const std::string empty = EmptyRoot();
  const std::string one = LeafHash("one");
  const std::string other = LeafHash("other");

  // From size 0 to anything, even to size 0: refused, whatever the proof.
  EXPECT_THAT(VerifyConsistency(0, 0, empty, empty, {}),
              StatusIs(code, HasSubstr("empty tree")));
  EXPECT_THAT(VerifyConsistency(0, 0, empty, other, {}),
              StatusIs(code, HasSubstr("empty tree")));
  EXPECT_THAT(VerifyConsistency(0, 1, empty, one, {}),
              StatusIs(code, HasSubstr("empty tree")));
  EXPECT_THAT(VerifyConsistency(0, 1, empty, one, {one}),
              StatusIs(code, HasSubstr("empty tree")));
  EXPECT_THAT(VerifyConsistency(1, 0, one, empty, {}),
              StatusIs(code, HasSubstr("smaller size 0")));
  // Equal sizes: empty proof and equal roots (nothing is hashed, so their
  // length does not matter).
  EXPECT_OK(VerifyConsistency(1, 1, one, one, {}));
  EXPECT_THAT(VerifyConsistency(1, 1, one, other, {}),
              StatusIs(code, HasSubstr("root mismatch")));
  EXPECT_THAT(VerifyConsistency(1, 1, one, one, {one}),
              StatusIs(code, HasSubstr("has 1 hashes, expected 0")));
  EXPECT_OK(VerifyConsistency(1, 1, "don't care 2", "don't care 2", {}));
  // Inclusion in the empty tree does not exist.
  EXPECT_THAT(VerifyInclusion(0, 0, one, {}, empty),
              StatusIs(code, HasSubstr("outside a tree of size 0")));
}

// ---------------------------------------------------------------------------
// CompactRange

TEST(CompactRangeTest, SinkGetsTheLeafThenEachCompletedParent) {
  constexpr uint64_t kSize = 70;
  std::vector<std::string> leaves;
  for (uint64_t i = 0; i < kSize; ++i) {
    leaves.push_back(RefLeafHash(absl::StrCat(i)));
  }
  ReferenceTree ref(leaves);
  CompactRange range;
  for (uint64_t i = 0; i < kSize; ++i) {
    std::vector<std::tuple<int, uint64_t, std::string>> got;
    range.Append(leaves[i],
                 [&](int level, uint64_t index, absl::string_view hash) {
                   got.emplace_back(level, index, std::string(hash));
                 });
    // Leaf i completes one subtree per trailing one bit of i.
    std::vector<std::tuple<int, uint64_t, std::string>> want;
    for (int level = 0; level <= std::countr_one(i); ++level) {
      const uint64_t index = i >> level;
      want.emplace_back(level, index,
                        ref.Mth(index << level, (index + 1) << level));
    }
    EXPECT_EQ(got, want) << "leaf " << i;
    EXPECT_EQ(range.size(), i + 1);
    EXPECT_EQ(range.Root(), ref.Root(i + 1));
  }
  // Appending without a sink builds the same range.
  CompactRange quiet;
  for (const std::string& leaf : leaves) quiet.Append(leaf);
  EXPECT_EQ(quiet.Root(), range.Root());
}

TEST(CompactRangeTest, LoadFromStoredNodesEqualsTheAppendedRange) {
  constexpr uint64_t kMaxSize = 300;
  constexpr uint64_t kMore = 5;
  BuiltTree tree(kMaxSize + kMore);
  ReferenceTree ref(tree.leaves);
  for (uint64_t size = 0; size <= kMaxSize; ++size) {
    SCOPED_TRACE(absl::StrCat("size ", size));
    tree.nodes.set_tree_size(size);
    tree.nodes.reset_reads();
    ASSERT_OK_AND_ASSIGN(CompactRange loaded,
                         CompactRange::Load(size, tree.nodes));
    EXPECT_EQ(tree.nodes.reads(), std::popcount(size));
    EXPECT_EQ(loaded.size(), size);
    EXPECT_EQ(loaded.Root(), tree.roots[size]);
    // A loaded range keeps growing like the original: its inner hashes are
    // right, not just its root.
    for (uint64_t i = size; i < size + kMore; ++i) {
      loaded.Append(tree.leaves[i]);
      EXPECT_EQ(loaded.Root(), ref.Root(i + 1)) << "after leaf " << i;
    }
  }
}

TEST(CompactRangeTest, StoreErrorsPropagate) {
  FailingNodes failing(absl::UnavailableError("disk unplugged"));
  const auto unavailable =
      StatusIs(absl::StatusCode::kUnavailable, HasSubstr("disk unplugged"));
  EXPECT_THAT(RootAt(5, failing), unavailable);
  EXPECT_THAT(InclusionProof(3, 5, failing), unavailable);
  EXPECT_THAT(ConsistencyProof(2, 5, failing), unavailable);
  EXPECT_THAT(CompactRange::Load(5, failing), unavailable);
  // Nothing to read, nothing to fail.
  EXPECT_THAT(RootAt(0, failing), IsOk());
  EXPECT_THAT(CompactRange::Load(0, failing), IsOk());
  EXPECT_THAT(ConsistencyProof(5, 5, failing), IsOk());

  ShortNodes corrupt;
  const auto data_loss = StatusIs(absl::StatusCode::kDataLoss,
                                  HasSubstr("has 31 bytes, expected 32"));
  EXPECT_THAT(RootAt(5, corrupt), data_loss);
  EXPECT_THAT(InclusionProof(3, 5, corrupt), data_loss);
  EXPECT_THAT(ConsistencyProof(2, 5, corrupt), data_loss);
  EXPECT_THAT(CompactRange::Load(5, corrupt), data_loss);
}

}  // namespace
}  // namespace casebridge::merkle

// cpp_app: a C++17 program using ragcore's C API directly (the headers are extern "C").
//
// Thin RAII wrappers turn the C conventions into C++ ones:
//   - every handle the library allocates is held by a std::unique_ptr whose deleter is the
//     matching C destructor (rag_close, rag_results_free, rag_free), so nothing leaks when an
//     exception unwinds the stack; the destructors accept NULL, as the C API promises;
//   - every negative RAG_E* status becomes a rag::error exception carrying the code, the
//     code's text (rag_strerror) and the thread's detail (rag_error_last), read at once
//     because the next call on the thread may overwrite it.
// It ingests a few documents (one of them restricted by an ACL), searches, assembles a prompt,
// and shows an error turned into an exception; any failure exits non-zero (CTest
// example_cpp_app).
//
//   cpp_app [ROOT]     (default: a fresh directory under the system temp dir, removed after)
#include <ragcore/ragcore.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace rag {

// A failed ragcore call.
class error : public std::runtime_error {
  public:
    error(int code, const std::string &what)
        : std::runtime_error(what + ": " + rag_strerror(code) + " (" + rag_error_last() + ")"),
          code_(code)
    {
    }
    int code() const noexcept { return code_; }

  private:
    int code_;
};

inline void check(int rc, const std::string &what)
{
    if (rc != RAG_OK)
        throw error(rc, what);
}

struct ctx_deleter {
    void operator()(rag_ctx *c) const noexcept { rag_close(c); }
};
struct results_deleter {
    void operator()(rag_results *r) const noexcept { rag_results_free(r); }
};
struct free_deleter {
    void operator()(char *p) const noexcept { rag_free(p); }
};
using ctx_ptr = std::unique_ptr<rag_ctx, ctx_deleter>;
using results_ptr = std::unique_ptr<rag_results, results_deleter>;
using string_ptr = std::unique_ptr<char, free_deleter>; // a string ragcore allocated

// One open root.  Movable, not copyable (unique_ptr), closed by its destructor.
class store {
  public:
    explicit store(const std::string &root)
    {
        rag_options opts;
        check(rag_options_init(&opts), "rag_options_init");
        opts.no_sync = 1; // a throw-away root
        rag_ctx *raw = nullptr;
        check(rag_open(&raw, root.c_str(), &opts), "rag_open " + root);
        ctx_.reset(raw);
    }

    // Put a text document; returns its new version.  `acl` empty: public.
    std::uint64_t put(const std::string &id, const std::string &text, const std::string &title,
                      const std::vector<std::string> &acl = {})
    {
        std::vector<const char *> principals;
        for (const auto &p : acl)
            principals.push_back(p.c_str());
        rag_doc doc;
        std::memset(&doc, 0, sizeof doc);
        doc.id = id.c_str();
        doc.data = text.data();
        doc.size = text.size();
        doc.mime = "text/plain";
        doc.title = title.c_str();
        doc.acl = principals.empty() ? nullptr : principals.data();
        doc.acl_count = principals.size();
        std::uint64_t version = 0;
        check(rag_doc_put(ctx_.get(), &doc, &version), "put " + id);
        return version;
    }

    void remove(const std::string &id)
    {
        check(rag_doc_delete(ctx_.get(), id.c_str()), "delete " + id);
    }

    // Wait until everything put so far is searchable (the pipeline runs on this thread).
    void drain(std::uint32_t timeout_ms = 60000)
    {
        check(rag_drain(ctx_.get(), timeout_ms), "drain");
    }

    // Search as the given principals (empty: public documents only).
    results_ptr search(const std::string &text, std::size_t k,
                       const std::vector<std::string> &principals = {}) const
    {
        std::vector<const char *> p;
        for (const auto &s : principals)
            p.push_back(s.c_str());
        rag_query q = RAG_QUERY_INIT;
        q.text = text.c_str();
        q.k = k;
        q.principals = p.empty() ? nullptr : p.data();
        q.principal_count = p.size();
        rag_results *raw = nullptr;
        check(rag_search(ctx_.get(), &q, &raw), "search");
        return results_ptr(raw);
    }

    std::string assemble(const rag_results &results, const std::string &question,
                         std::size_t budget) const
    {
        rag_assemble_opts ao = RAG_ASSEMBLE_INIT;
        ao.question = question.c_str();
        ao.token_budget = budget;
        char *raw = nullptr;
        check(rag_assemble(ctx_.get(), &results, &ao, &raw), "assemble");
        string_ptr prompt(raw);
        return std::string(prompt.get());
    }

  private:
    ctx_ptr ctx_;
};

} // namespace rag

namespace {

int run(const std::string &root)
{
    rag::store db(root);
    db.put("espresso", "Espresso is brewed by forcing hot water through finely ground coffee "
                       "at about nine bars of pressure; a shot takes 25 to 30 seconds.",
           "Espresso basics");
    db.put("pourover", "Pour-over coffee drips through a paper filter; a medium-fine grind and "
                       "water just off the boil give a clean cup in three to four minutes.",
           "Pour-over");
    db.put("roastery-costs", "Internal: the roastery pays 7.40 per kilo of green coffee beans "
                             "this season; do not share coffee prices with customers.",
           "Roastery costs", {"team:roastery"});
    db.drain();

    // A customer (no principals) finds the public documents only.
    auto hits = db.search("how long does an espresso shot take?", 5);
    if (hits->count == 0 || std::strcmp(hits->items[0].doc_id, "espresso") != 0) {
        std::cerr << "cpp_app: expected espresso first\n";
        return 1;
    }
    for (std::size_t i = 0; i < hits->count; i++) {
        const rag_result &h = hits->items[i];
        std::cout << i + 1 << ". " << h.doc_id << " v" << h.version << " score " << h.score
                  << " \"" << h.title << "\"\n";
        if (std::strcmp(h.doc_id, "roastery-costs") == 0) {
            std::cerr << "cpp_app: a restricted document reached a public search\n";
            return 1;
        }
    }
    // The roastery team sees its document.
    auto team = db.search("price of green coffee beans", 5, {"team:roastery"});
    bool found = false;
    for (std::size_t i = 0; i < team->count; i++)
        found = found || std::strcmp(team->items[i].doc_id, "roastery-costs") == 0;
    if (!found) {
        std::cerr << "cpp_app: the roastery team cannot find its document\n";
        return 1;
    }

    std::string prompt = db.assemble(*hits, "How long does an espresso shot take?", 512);
    std::cout << "prompt (" << prompt.size() << " bytes):\n" << prompt << "\n";
    if (prompt.find("nine bars") == std::string::npos) {
        std::cerr << "cpp_app: the prompt lacks the espresso text\n";
        return 1;
    }

    // Errors are exceptions with the RAG_E* code: deleting an unknown id is RAG_ENOTFOUND.
    try {
        db.remove("no-such-document");
        std::cerr << "cpp_app: deleting an unknown id did not throw\n";
        return 1;
    } catch (const rag::error &e) {
        std::cout << "caught: " << e.what() << "\n";
        if (e.code() != RAG_ENOTFOUND)
            return 1;
    }
    return 0;
} // db closes here (rag_close through its unique_ptr), also when an exception leaves run()

} // namespace

int main(int argc, char **argv)
{
    namespace fs = std::filesystem;
    std::string root;
    bool temporary = argc <= 1;
    try {
        if (temporary) {
            std::string tmpl = (fs::temp_directory_path() / "ragcore-cpp-app-XXXXXX").string();
            std::vector<char> buf(tmpl.begin(), tmpl.end());
            buf.push_back('\0');
            if (!mkdtemp(buf.data()))
                throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
            root = buf.data();
        } else {
            root = argv[1];
        }
        int status = run(root);
        if (temporary)
            fs::remove_all(root);
        if (status == 0)
            std::cout << "cpp_app: OK (ragcore " << rag_version_string() << ")\n";
        return status;
    } catch (const std::exception &e) {
        std::cerr << "cpp_app: " << e.what() << "\n";
        if (temporary && !root.empty()) {
            std::error_code ec;
            fs::remove_all(root, ec);
        }
        return 1;
    }
}

"""The Jupyter project's own conformance suite, `jupyter_kernel_test`, against the
rayrepl kernel, with every attribute the suite knows set.

The suite checks each reply and IOPub message against the messaging schema, so a
kernel that merely "works in JupyterLab" can still fail here, as evcxr_jupyter
does on its error schema, history and is_complete."""

import jupyter_kernel_test as jkt

# The first cell waits for the evaluator and the local cluster; a cold build
# cache makes that take minutes, the suite's own timeout is 15 s.
FIRST_CELL_TIMEOUT = 600


class RayreplKernelTests(jkt.KernelTests):
    kernel_name = "rayrepl"
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("a line on stderr");'

    completion_samples = [
        {"text": ":to", "matches": {":top"}},
        {"text": "let rayrepl_answer = 42;\nrayrepl_ans", "matches": {"rayrepl_answer"}},
    ]

    complete_code_samples = ["1 + 1", "let x = 1;", "fn f() {}", "#[ray::remote]\nfn g() -> u32 { 1 }", ":vars"]
    incomplete_code_samples = ["fn f() {", "let s = \"abc", "vec![1,", "#[ray::remote]"]
    invalid_code_samples = ["1 + 1)", "let = ;", "fn f() { ]"]

    code_page_something = ":help"

    code_generate_error = 'let x: u32 = "not a number";'

    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": "ray::put(&String::from(\"rayrepl\"))?.await?", "result": '"rayrepl"'},
        {"code": "ray::init()", "mime": "text/html"},
    ]
    supported_history_operations = ("tail", "range", "search")
    code_history_pattern = "6?*?7"

    code_display_data = [
        {"code": 'ray::notebook::display_html("<b>hello</b>");', "mime": "text/html"},
        {"code": ":top", "mime": "text/html"},
    ]

    code_inspect_sample = "ray::get"

    code_clear_output = "ray::notebook::clear_output(false);"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.kc.execute_interactive("1", timeout=FIRST_CELL_TIMEOUT)


class RayreplIopubWelcomeTests(jkt.IopubWelcomeTests):
    kernel_name = "rayrepl"
    support_iopub_welcome = True

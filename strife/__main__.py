from strife.cli import main

raise SystemExit(main())

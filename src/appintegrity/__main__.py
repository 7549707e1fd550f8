from appintegrity.cli import main

raise SystemExit(main())

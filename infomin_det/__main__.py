from infomin_det.cli import main

raise SystemExit(main())

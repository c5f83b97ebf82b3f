from services.coordinator.app import main

main()

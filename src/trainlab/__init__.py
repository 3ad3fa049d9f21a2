"""trainlab: choose the learning rate, batch size and optimizer, with Lightning + Hydra."""

from trainlab.data.spec import register_resolver as register_data_spec
from trainlab.models.width import register_resolver as register_base_width
from trainlab.objective import register_resolvers
from trainlab.trackers import register_tracker_resolvers

# the configs' ${trainlab.monitor:...}, ${trainlab.mode:...}, ${trainlab.direction:...}: any
# import of trainlab (train.py's Hydra callbacks, the pipeline, the tests) makes them known
register_resolvers()
register_tracker_resolvers()  # conf/logger's run names, groups and tags
register_data_spec()  # the model configs' ${data_spec:in_features}, ${data_spec:num_outputs}, ...
register_base_width()  # the model configs' ${trainlab.base_width:<their own width>}
